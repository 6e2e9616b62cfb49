// The crop square from BlazeFace (no 68 landmarks in the browser), calibrated against the
// Python runtime's 3DDFA square by calibrate_crop.py (numbers in crop_calibration.json),
// then the model's framing (crop_scale, crop_shift_y) applied exactly as runtime/crop.py.
export function roiFromBlazeFace(det, calib, scale = 1, shiftY = 0) {
  const [x0, y0, x1, y1] = det.box;
  const kp = det.keypoints;
  const w = x1 - x0;
  const p = (kp[2][0] - (kp[4][0] + kp[5][0]) / 2) / w; // yaw proxy: nose vs. ears midpoint
  const cx = (x0 + x1) / 2 + w * (calib.a_x + calib.b_x * p);
  let cy = (y0 + y1) / 2 + w * (calib.a_y + calib.b_y * p);
  const side = w * (calib.a_s + calib.b_s * Math.abs(p)) * scale;
  cy += shiftY * side;
  return [cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2];
}

// Crop `box` (rounded to whole pixels, black outside the image, like runtime/crop.crop_square)
// and resize to size x size on `canvas`; returns RGB uint8 (size*size*3).
export function cropSquare(source, box, size, canvas) {
  const [x0, y0, x1, y1] = box.map(Math.round);
  const ctx = blackSquare(canvas, size);
  ctx.drawImage(source, x0, y0, x1 - x0, y1 - y0, 0, 0, size, size); // the out-of-image part stays black
  return rgbaToRgb(ctx.getImageData(0, 0, size, size).data);
}

// `canvas` resized to size x size and painted black, with high-quality smoothing for resizing.
export function blackSquare(canvas, size) {
  canvas.width = size;
  canvas.height = size;
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  ctx.fillStyle = '#000';
  ctx.fillRect(0, 0, size, size);
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = 'high';
  return ctx;
}

export function rgbaToRgb(px) {
  const out = new Uint8Array((px.length / 4) * 3);
  for (let i = 0, j = 0; i < px.length; i += 4) {
    out[j++] = px[i];
    out[j++] = px[i + 1];
    out[j++] = px[i + 2];
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
