// BlazeFace short-range input and decoding, a port of runtime/blazeface.py and of the
// detector's resize in runtime/detect.py (same pixels, anchors, letterbox, sigmoid, box
// decoding and NMS), plus the 6 keypoints the Python runtime drops:
// right eye, left eye, nose tip, mouth centre, right ear tragion, left ear tragion.
import { imageFromRgb, imageFromRgba, resizeArea, rint } from './resample.js';

export const INPUT = 128;

// 896 anchors (16x16x2 at stride 8, 8x8x6 at stride 16), centres in [0,1].
export function anchors() {
  const out = [];
  for (const [stride, perCell] of [[8, 2], [16, 6]]) {
    const n = INPUT / stride;
    for (let y = 0; y < n; y++)
      for (let x = 0; x < n; x++)
        for (let k = 0; k < perCell; k++) out.push([(x + 0.5) / n, (y + 0.5) / n]);
  }
  return out;
}
const ANCHORS = anchors();

// The detector's input exactly as runtime/detect.py + runtime/blazeface.py make it from the
// frame's pixels `img`: the frame resized so that its long side is det_side (only when larger;
// INTER_AREA), put at the top-left of a black square, resized to 128x128 (INTER_AREA), scaled
// to [-1, 1]. Returns the NHWC float32 tensor, the square's side and the resize factor f (boxes
// come back in the square's pixels; divided by f they are the frame's). A frame whose long side
// is under min_det_side is enlarged by the canvas here (OpenCV's INTER_LINEAR there): the one
// case where the browser's input is not byte-identical.
export function preprocess(img, source, canvas, { det_side: detSide, min_det_side: minSide }) {
  const w = img.fullWidth, h = img.fullHeight, long = Math.max(w, h);
  const f = Math.min(detSide, Math.max(minSide, long)) / long;
  const sw = Math.max(1, rint(w * f)), sh = Math.max(1, rint(h * f)), side = Math.max(sw, sh);
  let small;
  if (Math.abs(f - 1) < 1e-6) small = img;
  else if (f < 1) small = resizeArea(img, sw, sh);
  else {
    canvas.width = sw;
    canvas.height = sh;
    const ctx = canvas.getContext('2d', { willReadFrequently: true });
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(source, 0, 0, sw, sh);
    small = imageFromRgba(ctx.getImageData(0, 0, sw, sh).data, sw, sh);
  }
  const pad = new Uint8Array(side * side * 3);
  const { data, channels: ch } = small;
  for (let y = 0; y < sh; y++) {
    for (let x = 0, p = y * sw * ch, q = y * side * 3; x < sw; x++, p += ch, q += 3) {
      pad[q] = data[p]; pad[q + 1] = data[p + 1]; pad[q + 2] = data[p + 2];
    }
  }
  const px = resizeArea(imageFromRgb(pad, side, side), INPUT, INPUT).data;
  const x = new Float32Array(px.length);
  for (let i = 0; i < px.length; i++) x[i] = Math.fround(px[i] / 127.5) - 1; // float32, as numpy does it
  return { tensor: x, side, f };
}

function iou(a, b) {
  const ix = Math.max(0, Math.min(a[2], b[2]) - Math.max(a[0], b[0]));
  const iy = Math.max(0, Math.min(a[3], b[3]) - Math.max(a[1], b[1]));
  const inter = ix * iy;
  return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter + 1e-9);
}

// regressors (896*16) and classificators (896) -> [{box:[x0,y0,x1,y1], keypoints:[[x,y]x6], score}]
// in pixels of the letterboxed square of side `side`, best first.
export function decode(regressors, logits, side, minScore = 0.5, nmsIou = 0.3) {
  const cand = [];
  for (let i = 0; i < ANCHORS.length; i++) {
    const l = Math.max(-100, Math.min(100, logits[i]));
    const score = 1 / (1 + Math.exp(-l));
    if (score < minScore) continue;
    const r = regressors.subarray(i * 16, i * 16 + 16);
    const [ax, ay] = ANCHORS[i];
    const cx = ax + r[0] / INPUT, cy = ay + r[1] / INPUT, bw = r[2] / INPUT, bh = r[3] / INPUT;
    const box = [cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2].map((v) => v * side);
    const keypoints = [];
    for (let k = 0; k < 6; k++) keypoints.push([(ax + r[4 + 2 * k] / INPUT) * side, (ay + r[5 + 2 * k] / INPUT) * side]);
    cand.push({ box, keypoints, score });
  }
  cand.sort((a, b) => b.score - a.score);
  const keep = [];
  for (const c of cand) if (keep.every((k) => iou(k.box, c.box) < nmsIou)) keep.push(c);
  return keep;
}
