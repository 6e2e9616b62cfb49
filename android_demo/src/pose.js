// The pose network's box maths, its two passes and the canonical crop, ported from
// runtime/pose.py and runtime/detect.py (FaceAnalyzer.faces_from_candidates).
//
// Pixels are resampled exactly as runtime.pose.crop does it (resample.js: OpenCV's INTER_AREA
// pre-shrink when the square is much larger than the output, then cv2.warpAffine's bilinear
// with a 0 border, in OpenCV's own arithmetic), so that the pose network and the generator see
// the same bytes in the browser as in Python. Constants (96 px input, canonical spots, pass scales,
// score threshold) come from models/model.json, written by build.py from runtime.pose/detect.

import { invertAffine, resizeArea, warpAffine } from './resample.js';

export { imageFromRgba, invertAffine } from './resample.js';

// ---------------------------------------------------------------- geometry (double precision)
// 2x3 affine [a, b, c, d, e, f] mapping image -> size x size view of the square (cx, cy, side,
// angle): x' = a x + b y + c, y' = d x + e y + f (runtime.pose.box_affine).
export function boxAffine(cx, cy, side, angle, size) {
  const c = Math.cos(angle), s = Math.sin(angle), k = size / side;
  const a = c * k, b = s * k, d = -s * k, e = c * k;
  return [a, b, size / 2 - (a * cx + b * cy), d, e, size / 2 - (d * cx + e * cy)];
}

export const applyAffine = (m, [x, y]) => [m[0] * x + m[1] * y + m[2], m[3] * x + m[4] * y + m[5]];

// (cx, cy, side, angle) of the canonical crop whose E and M fall on the canonical spots.
export function canonicalSquare(E, M, P) {
  const dx = M[0] - E[0], dy = M[1] - E[1];
  const dist = Math.max(Math.hypot(dx, dy), 1e-3);
  const angle = Math.atan2(-dx, dy); // 0 when M is straight below E
  const f = (P.canon_size / 2 - P.canon_e_y) / P.canon_em;
  return [E[0] + dx * f, E[1] + dy * f, dist * P.canon_size / P.canon_em, angle];
}

export function squareCorners([cx, cy, side, angle]) {
  const c = Math.cos(angle), s = Math.sin(angle), h = side / 2;
  const r = [c, s], d = [-s, c];
  return [[-1, -1], [1, -1], [1, 1], [-1, 1]].map(([i, j]) => [cx + h * (i * r[0] + j * d[0]), cy + h * (i * r[1] + j * d[1])]);
}

export function squareBbox(sq) {
  const p = squareCorners(sq);
  const xs = p.map((q) => q[0]), ys = p.map((q) => q[1]);
  return [Math.min(...xs), Math.min(...ys), Math.max(...xs), Math.max(...ys)];
}

// First-pass square from a detector box [x0, y0, x1, y1] (runtime.pose.det_square).
export const detSquare = ([x0, y0, x1, y1], P) => [(x0 + x1) / 2, (y0 + y1) / 2, Math.max(x1 - x0, y1 - y0) * P.det_scale, 0];

// Where each quantity sits in the network's output row, from the names in its metadata
// ("outputs"): score_logit, Ex, Ey, Mx, My (keypoints in [-1, 1] of the input), and the yaw
// either as one value "yaw/90" or as logits over classes "yaw-90" ... "yaw+90" (the estimate
// is then the softmax expectation, as runtime.pose.decode_yaw computes it).
export function outputLayout(names) {
  const at = (n) => {
    const i = names.indexOf(n);
    if (i < 0) throw new Error(`pose network: no "${n}" output in ${JSON.stringify(names)}`);
    return i;
  };
  const bins = names.map((n, i) => [i, /^yaw[+-]\d+$/.test(n) ? Number(n.slice(3)) : NaN]).filter(([, d]) => !Number.isNaN(d));
  const yaw = names.includes('yaw/90') ? at('yaw/90') : null;
  if (yaw === null && !bins.length) throw new Error(`pose network: no yaw output in ${JSON.stringify(names)}`);
  return { size: names.length, score: at('score_logit'), E: [at('Ex'), at('Ey')], M: [at('Mx'), at('My')], yaw, bins };
}

function decodeYaw(v, L) {
  if (L.yaw !== null) return Math.max(-90, Math.min(90, v[L.yaw] * 90));
  const m = Math.max(...L.bins.map(([i]) => v[i]));
  let sum = 0, acc = 0;
  for (const [i, deg] of L.bins) { const p = Math.exp(v[i] - m); sum += p; acc += p * deg; }
  return acc / sum;
}

// One row of the network's output for the input square `sq` -> { E, M, yaw (degrees), score
// (0..1), square (canonical) } (runtime.pose.PoseNet.predict).
export function decodePose(v, sq, P) {
  const L = P.layout ??= outputLayout(P.outputs);
  const inv = invertAffine(boxAffine(...sq, P.input));
  const kp = (i) => (v[i] + 1) * P.input / 2;
  const E = applyAffine(inv, [kp(L.E[0]), kp(L.E[1])]);
  const M = applyAffine(inv, [kp(L.M[0]), kp(L.M[1])]);
  const score = 1 / (1 + Math.exp(-Math.max(-50, Math.min(50, v[L.score]))));
  return { E, M, yaw: decodeYaw(v, L), score, square: canonicalSquare(E, M, P) };
}

// runtime.pose.crop: the square resampled to size x size RGB bytes (0 outside the image), into
// out at offset; a square more than 3x the output is first shrunk by k = floor(side / (1.5 size)).
export function crop(img, [cx, cy, side, angle], size, out = new Uint8Array(size * size * 3), offset = 0) {
  let src = img;
  const k = Math.floor(side / (size * 1.5));
  if (k >= 2) {
    const W = img.fullWidth, H = img.fullHeight;
    const sx = Math.max(1, Math.floor(W / k)) / W, sy = Math.max(1, Math.floor(H / k)) / H;
    cx *= sx; cy *= sy; side *= (sx + sy) / 2;
    const [bx0, by0, bx1, by1] = squareBbox([cx, cy, side, angle]);
    src = resizeArea(img, Math.max(1, Math.floor(W / k)), Math.max(1, Math.floor(H / k)),
      [Math.floor(bx0) - 2, Math.floor(by0) - 2, Math.ceil(bx1) + 3, Math.ceil(by1) + 3]);
  }
  warpAffine(src, boxAffine(cx, cy, side, angle, size), size, out, offset);
  return out;
}

// ---------------------------------------------------------------- the pose network
// Network outputs for a batch of input squares: (N, 6) float rows.
export async function runPoseNet(ort, session, img, squares, P) {
  const n = squares.length, s = P.input;
  const x = new Uint8Array(n * s * s * 3);
  squares.forEach((sq, i) => crop(img, sq, s, x, i * s * s * 3));
  const out = await session.run({ [session.inputNames[0]]: new ort.Tensor('uint8', x, [n, s, s, 3]) });
  const y = out[session.outputNames[0]].data, k = y.length / n;
  return { input: x, rows: squares.map((_, i) => Array.from(y.subarray(i * k, (i + 1) * k))) };
}

export async function predict(ort, session, img, squares, P) {
  if (!squares.length) return [];
  const { rows } = await runPoseNet(ort, session, img, squares, P);
  return rows.map((v, i) => decodePose(v, squares[i], P));
}

// PoseNet.refine: two passes from detector boxes; the second pass's keypoints and yaw are kept,
// the score is the lower of the two.
export async function refine(ort, session, img, boxes, P) {
  const first = await predict(ort, session, img, boxes.map((b) => detSquare(b, P)), P);
  const second = await predict(ort, session, img, first.map((p) => [p.square[0], p.square[1], p.square[2] * P.refine_scale, p.square[3]]), P);
  second.forEach((p, i) => { p.score = Math.min(p.score, first[i].score); });
  return second;
}

// cv2.dnn.NMSBoxes on [x0, y0, x1, y1] boxes: best score first, a box is dropped when it
// overlaps a kept one by more than `iou`. Returns the kept indices.
export function nms(boxes, scores, iou) {
  const order = scores.map((s, i) => i).sort((a, b) => scores[b] - scores[a]);
  const keep = [];
  const area = (b) => (b[2] - b[0]) * (b[3] - b[1]);
  for (const i of order) {
    const ok = keep.every((j) => {
      const a = boxes[i], b = boxes[j];
      const ix = Math.max(0, Math.min(a[2], b[2]) - Math.max(a[0], b[0])), iy = Math.max(0, Math.min(a[3], b[3]) - Math.max(a[1], b[1]));
      const inter = ix * iy;
      return inter / (area(a) + area(b) - inter) <= iou;
    });
    if (ok) keep.push(i);
  }
  return keep;
}

// FaceAnalyzer.needed_score: the face score a candidate ({ detectors: [pass names], score }) needs.
// Found by several passes: min_score; by one pass: single_min_score, unless a BlazeFace pass is
// sure of it (>= blazeface_sure): then sure_min_score (the app runs at runtime.detect's MIN_SCORE).
export function neededScore(det, P) {
  if (!det.detectors || det.detectors.length > 1) return P.min_score;
  if (det.detectors[0].startsWith('bf-') && det.score >= P.blazeface_sure) return P.sure_min_score;
  return Math.max(P.min_score, P.single_min_score);
}

// FaceAnalyzer.faces_from_candidates: pose-refine the candidate boxes (merged detections
// { box, score, detectors }), keep those the network takes for a face (neededScore), merge the
// ones that converged on the same face, largest first, drop faces under min_face px (a face spans
// ~0.73 of the canonical side) and faces centred inside a larger face's head (head_zone: a
// profile's ear).
export async function facesFromBoxes(ort, session, img, dets, P) {
  const boxes = dets.map((d) => d.box);
  const poses = (await refine(ort, session, img, boxes, P)).map((p, i) => ({ ...p, detBox: boxes[i] }));
  const faces = poses.filter((p, i) => p.score >= neededScore(dets[i], P));
  const merged = nms(faces.map((f) => squareBbox(f.square)), faces.map((f) => f.score), P.merge_iou).map((i) => faces[i]);
  merged.sort((a, b) => b.square[2] - a.square[2]);
  const kept = [];
  for (const f of merged) {
    if (f.square[2] * 0.73 < P.min_face) continue;
    if (kept.some((k) => Math.hypot(f.square[0] - k.square[0], f.square[1] - k.square[1]) < P.head_zone * k.square[2])) continue;
    kept.push(f);
  }
  return { faces: kept, candidates: poses };
}
