// Pixel and tensor helpers of the app. (The crop itself is in
// pose.js: the canonical eye-mouth square, resampled exactly as runtime/pose.py does.)

export function rgbToRgba(rgb) {
  const n = rgb.length / 3;
  const out = new Uint8ClampedArray(n * 4);
  for (let i = 0; i < n; i++) {
    out[4 * i] = rgb[3 * i];
    out[4 * i + 1] = rgb[3 * i + 1];
    out[4 * i + 2] = rgb[3 * i + 2];
    out[4 * i + 3] = 255;
  }
  return out;
}

// RGB uint8 -> NHWC float32 in the model's input range; model output -> RGBA for a canvas.
// Same arithmetic as runtime/engines.py Engine.preprocess / postprocess.
export function toInput(rgb, [lo, hi]) {
  const x = new Float32Array(rgb.length);
  const k = (hi - lo) / 255;
  for (let i = 0; i < rgb.length; i++) x[i] = rgb[i] * k + lo;
  return x;
}

export function outputToRgba(y, [lo, hi]) {
  const n = y.length / 3;
  const out = new Uint8ClampedArray(n * 4);
  for (let i = 0; i < n; i++) {
    for (let c = 0; c < 3; c++) out[i * 4 + c] = Math.floor((y[i * 3 + c] - lo) * (255 / (hi - lo)) + 0.5);
    out[i * 4 + 3] = 255;
  }
  return out;
}
