// Face candidates as runtime/detectors.py (CandidateDetector) and runtime/blazeface.py make them:
// BlazeFace passes, each on its own view of the frame (long side shrunk to max_side with
// INTER_AREA, a grey border of pad x that side), letterboxed to the model's input, decoded
// (anchors, sigmoid, box decoding, NMS), mapped back to the frame, moved onto the common box
// convention (square_fix) with a comparable score (norm_score), then merged (OpenCV NMS, then
// containment). The passes and their constants come from models/model.json (build.py reads
// them from runtime/detectors.py).
import { nms } from './pose.js';
import { resizeArea, rint } from './resample.js';

const ANCHORS = {};

// Anchor centres in [0, 1] of a variant (runtime.blazeface.anchors, float32).
export function anchors({ size, layers }) {
  const out = [];
  for (const [stride, perCell] of layers) {
    const n = size / stride;
    for (let y = 0; y < n; y++)
      for (let x = 0; x < n; x++)
        for (let k = 0; k < perCell; k++) out.push([Math.fround((x + 0.5) / n), Math.fround((y + 0.5) / n)]);
  }
  return out;
}

// The model input of one pass, exactly as runtime.detectors.prepare + BlazeFace.__call__ make
// it: the frame's long side shrunk to max_side (INTER_AREA, round-half-even sizes), a border of
// round(pad x long side) grey (128) pixels, the view at the top-left of a black square of side
// max(view), that square resized to the model's size (INTER_AREA; a square smaller than the
// model's input is enlarged bilinearly, where OpenCV's INTER_LINEAR is not reproduced to the
// byte), scaled to [-1, 1]. Returns the NHWC float32 tensor, the square's side, and the view's
// scale s and offset: view pixel = frame pixel * s + offset.
export function passInput(img, pass, size) {
  const w = img.fullWidth, h = img.fullHeight, long = Math.max(w, h);
  const s = pass.max_side && long > pass.max_side ? pass.max_side / long : 1;
  const sw = s === 1 ? w : Math.max(1, rint(w * s)), sh = s === 1 ? h : Math.max(1, rint(h * s));
  const small = s === 1 ? img : resizeArea(img, sw, sh);
  const b = Math.trunc(rint(pass.pad * long * s));
  const vw = sw + 2 * b, vh = sh + 2 * b, side = Math.max(vw, vh);
  const sq = new Uint8Array(side * side * 3);
  for (let y = 0; y < vh; y++) sq.fill(128, y * side * 3, (y * side + vw) * 3);
  const { data, channels: ch } = small;
  for (let y = 0; y < sh; y++) {
    for (let x = 0, p = y * small.width * ch, q = ((y + b) * side + b) * 3; x < sw; x++, p += ch, q += 3) {
      sq[q] = data[p]; sq[q + 1] = data[p + 1]; sq[q + 2] = data[p + 2];
    }
  }
  const src = { data: sq, channels: 3, width: side, height: side, x0: 0, y0: 0, fullWidth: side, fullHeight: side };
  const px = side > size ? resizeArea(src, size, size).data : resizeBilinear(sq, side, size);
  const x = new Float32Array(px.length);
  for (let i = 0; i < px.length; i++) x[i] = Math.fround(px[i] / 127.5) - 1; // float32, as numpy does it
  return { tensor: x, side, s, offset: b };
}

// Half-pixel-centred bilinear enlargement (only for frames under the model's input size).
function resizeBilinear(src, n, size) {
  const out = new Uint8Array(size * size * 3), k = n / size;
  const at = (v) => { const f = Math.min(Math.max((v + 0.5) * k - 0.5, 0), n - 1); const i = Math.min(Math.floor(f), n - 2 < 0 ? 0 : n - 2); return [i, f - i]; };
  for (let y = 0; y < size; y++) {
    const [y0, fy] = at(y), y1 = Math.min(y0 + 1, n - 1);
    for (let x = 0; x < size; x++) {
      const [x0, fx] = at(x), x1 = Math.min(x0 + 1, n - 1);
      for (let c = 0; c < 3; c++) {
        const v = (1 - fy) * ((1 - fx) * src[(y0 * n + x0) * 3 + c] + fx * src[(y0 * n + x1) * 3 + c])
          + fy * ((1 - fx) * src[(y1 * n + x0) * 3 + c] + fx * src[(y1 * n + x1) * 3 + c]);
        out[(y * size + x) * 3 + c] = Math.round(v);
      }
    }
  }
  return out;
}

function iou(a, b) {
  const ix = Math.max(0, Math.min(a[2], b[2]) - Math.max(a[0], b[0]));
  const iy = Math.max(0, Math.min(a[3], b[3]) - Math.max(a[1], b[1]));
  const inter = ix * iy;
  return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter + 1e-9);
}

// Model outputs (regressors: n x 16 in input pixels, logits: n) -> [{ box, keypoints, score }] in
// pixels of the letterboxed square of side `side`, best first (runtime.blazeface: score >=
// minScore, NMS keeping boxes that overlap a better one by less than 0.3).
export function decode(regressors, logits, variant, side, minScore = 0.5, nmsIou = 0.3) {
  const A = (ANCHORS[variant.size + JSON.stringify(variant.layers)] ??= anchors(variant));
  const S = variant.size, cand = [];
  for (let i = 0; i < A.length; i++) {
    const score = 1 / (1 + Math.exp(-Math.max(-80, Math.min(80, logits[i]))));
    if (score < minScore) continue;
    const r = regressors.subarray(i * 16, i * 16 + 16);
    const [ax, ay] = A[i];
    // float32 arithmetic, as numpy does it on the model's float32 outputs
    const f = Math.fround, cx = f(ax + f(r[0] / S)), cy = f(ay + f(r[1] / S)), hw = f(f(r[2] / S) / 2), hh = f(f(r[3] / S) / 2);
    const box = [f(cx - hw), f(cy - hh), f(cx + hw), f(cy + hh)].map((v) => f(v * side));
    const keypoints = [];
    for (let k = 0; k < 6; k++) keypoints.push([(ax + r[4 + 2 * k] / S) * side, (ay + r[5 + 2 * k] / S) * side]);
    cand.push({ box, keypoints, score });
  }
  cand.sort((a, b) => b.score - a.score);
  const keep = [];
  for (const c of cand) if (keep.every((k) => iou(k.box, c.box) < nmsIou)) keep.push(c);
  return keep;
}

// runtime.detectors.square_fix and norm_score.
export function squareFix([x0, y0, x1, y1], [dx, dy, k]) {
  const side = Math.sqrt(Math.max(x1 - x0, 1e-6) * Math.max(y1 - y0, 1e-6));
  const cx = (x0 + x1) / 2 + dx * side, cy = (y0 + y1) / 2 + dy * side, half = k * side / 2;
  return [cx - half, cy - half, cx + half, cy + half];
}

export const normScore = (fix, raw) => (fix ? 1 / (1 + Math.exp(-(fix[0] * raw + fix[1])))
  : raw >= 0 && raw <= 1 ? raw : 1 / (1 + Math.exp(-raw)));

// One pass on the frame's pixels: [{ box (common convention, frame px), score (comparable), raw,
// name, keypoints }].
export async function runPass(ort, session, img, pass, variant) {
  const { tensor, side, s, offset } = passInput(img, pass, variant.size);
  const out = await session.run({ [session.inputNames[0]]: new ort.Tensor('float32', tensor, [1, variant.size, variant.size, 3]) });
  const [logits, regressors] = Object.values(out).sort((a, b) => a.dims.at(-1) - b.dims.at(-1)); // 1 then 16 wide
  return decode(regressors.data, logits.data, variant, side, pass.model_score)
    .filter((d) => d.score >= pass.score)
    .map((d) => ({
      box: squareFix(d.box.map((v) => (v - offset) / s), pass.box_fix), score: normScore(pass.score_fix, d.score), raw: d.score,
      name: pass.name, keypoints: d.keypoints.map(([x, y]) => [(x - offset) / s, (y - offset) / s]),
    }));
}

const area = (b) => (b[2] - b[0]) * (b[3] - b[1]);
const boxSide = (b) => Math.sqrt(Math.max(b[2] - b[0], 0) * Math.max(b[3] - b[1], 0));
function inside(a, b) {
  const iw = Math.min(a[2], b[2]) - Math.max(a[0], b[0]), ih = Math.min(a[3], b[3]) - Math.max(a[1], b[1]);
  return iw <= 0 || ih <= 0 ? 0 : iw * ih / Math.max(area(a), 1e-9);
}
const iou0 = (a, b) => {
  const iw = Math.min(a[2], b[2]) - Math.max(a[0], b[0]), ih = Math.min(a[3], b[3]) - Math.max(a[1], b[1]);
  return iw <= 0 || ih <= 0 ? 0 : iw * ih / (area(a) + area(b) - iw * ih);
};

// runtime.detectors.merge: OpenCV NMS keeps the best box of each cluster, every other box joins
// the kept box it overlaps most; then a smaller candidate lying `contain` or more inside a
// stronger one (more detectors, then higher score) joins it. Largest first:
// [{ box, score, detectors: [names], members }].
export function merge(dets, iouThr, contain) {
  if (!dets.length) return [];
  const boxes = dets.map((d) => d.box), scores = dets.map((d) => d.score);
  const keep = nms(boxes, scores, iouThr);
  const groups = new Map(keep.map((k) => [k, []]));
  dets.forEach((_, i) => {
    const k = groups.has(i) ? i : keep.reduce((best, j) => (iou0(boxes[i], boxes[j]) > iou0(boxes[i], boxes[best]) ? j : best), keep[0]);
    groups.get(k).push(i);
  });
  if (contain) {
    const strength = (k) => [new Set(groups.get(k).map((i) => dets[i].name)).size, scores[k]];
    const order = [...groups.keys()].sort((a, b) => { const [na, sa] = strength(a), [nb, sb] = strength(b); return nb - na || sb - sa; });
    const kept = [];
    for (const k of order) {
      const host = kept.find((h) => inside(boxes[k], boxes[h]) >= contain && boxSide(boxes[k]) < boxSide(boxes[h]));
      if (host === undefined) kept.push(k);
      else { groups.get(host).push(...groups.get(k)); groups.delete(k); }
    }
  }
  const out = [...groups.entries()].map(([k, members]) => {
    members.sort((a, b) => scores[b] - scores[a]);
    return { box: boxes[k], score: Math.max(...members.map((i) => scores[i])), detectors: [...new Set(members.map((i) => dets[i].name))],
      keypoints: dets[k].keypoints, members: members.map((i) => dets[i]) };
  });
  return out.sort((a, b) => (b.box[2] - b.box[0]) - (a.box[2] - a.box[0]));
}
