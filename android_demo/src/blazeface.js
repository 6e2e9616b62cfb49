// BlazeFace short-range decoding, a port of runtime/blazeface.py (same anchors, letterbox,
// sigmoid, box decoding and NMS), plus the 6 keypoints the Python runtime drops:
// right eye, left eye, nose tip, mouth centre, right ear tragion, left ear tragion.
import { blackSquare } from './crop.js';

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

// Letterbox like the Python runtime: the image at the top-left of a black square of side
// max(w, h), resized to 128x128; returns NHWC float32 in [-1, 1] and that side.
export function preprocess(source, width, height, canvas) {
  const side = Math.max(width, height);
  const ctx = blackSquare(canvas, INPUT);
  const f = INPUT / side;
  ctx.drawImage(source, 0, 0, width, height, 0, 0, width * f, height * f);
  const px = ctx.getImageData(0, 0, INPUT, INPUT).data;
  const x = new Float32Array(INPUT * INPUT * 3);
  for (let i = 0, j = 0; i < px.length; i += 4) {
    x[j++] = px[i] / 127.5 - 1;
    x[j++] = px[i + 1] / 127.5 - 1;
    x[j++] = px[i + 2] / 127.5 - 1;
  }
  return { tensor: x, side };
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
