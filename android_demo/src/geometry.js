// The default generator in the browser: runtime/geometry.py's GeometricFrontalizer, step for step
// (this face's 68 landmarks from 3DDFA_V2 -> a scaled-orthographic camera of the mean 3D face and
// this face's own shape by a thin-plate spline -> each output pixel's surface point -> the photo's
// own pixels there, the hidden side from its mirror twin, holes inpainted). The numbered steps
// are the Python docstring's. OpenCV's arithmetic where it decides pixels: cv2.remap's 1/32 px
// map rounding and 15-bit weights, cv2.inpaint's Telea fast marching (modules/photo/src/inpaint.cpp),
// GaussianBlur's kernel size and reflect-101 border. The mean face's arrays (floored depth,
// normals, soft face mask) come from build.py (models/geometry.bin), the constants from
// models/model.json, so nothing here is a second copy of a number in runtime/geometry.py.
import { boxAffine, invertAffine } from './pose.js';
import { resizeArea, rint } from './resample.js';

const f32 = Math.fround;
const ramp = (x, w) => Math.min(1, Math.max(0, x / w));
const apply = (m, x, y) => [m[0] * x + m[1] * y + m[2], m[3] * x + m[4] * y + m[5]];

// ---------------------------------------------------------------- small dense algebra (float64)
function solve(a, b, n, k) { // a (n*n) x = b (n*k), Gaussian elimination with partial pivoting, in place
  for (let c = 0; c < n; c++) {
    let p = c;
    for (let r = c + 1; r < n; r++) if (Math.abs(a[r * n + c]) > Math.abs(a[p * n + c])) p = r;
    if (p !== c) {
      for (let j = 0; j < n; j++) [a[c * n + j], a[p * n + j]] = [a[p * n + j], a[c * n + j]];
      for (let j = 0; j < k; j++) [b[c * k + j], b[p * k + j]] = [b[p * k + j], b[c * k + j]];
    }
    const d = a[c * n + c];
    for (let r = c + 1; r < n; r++) {
      const m = a[r * n + c] / d;
      if (m === 0) continue;
      for (let j = c; j < n; j++) a[r * n + j] -= m * a[c * n + j];
      for (let j = 0; j < k; j++) b[r * k + j] -= m * b[c * k + j];
    }
  }
  for (let c = n - 1; c >= 0; c--) {
    for (let j = 0; j < k; j++) {
      let v = b[c * k + j];
      for (let r = c + 1; r < n; r++) v -= a[c * n + r] * b[r * k + j];
      b[c * k + j] = v / a[c * n + c];
    }
  }
  return b;
}

const tpsK = (ax, ay, bx, by) => { // r^2 log r from squared distances, as runtime.geometry.tps_kernel
  const d2 = Math.max(ax * ax + ay * ay + (bx * bx + by * by) - 2 * (ax * bx + ay * by), 0);
  return 0.5 * d2 * Math.log(d2 + 1e-18);
};

// Thin-plate spline weights ((n + 3) x k) through values (n x k, or (n + 3) x k with zeros below) at
// points (n x 2), smoothing on the diagonal.
function tpsFit(px, py, values, smoothing, k) {
  const n = px.length, m = n + 3, a = new Float64Array(m * m), b = new Float64Array(m * k);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) a[i * m + j] = tpsK(px[i], py[i], px[j], py[j]) + (i === j ? smoothing : 0);
    const aff = [1, px[i], py[i]];
    for (let c = 0; c < 3; c++) { a[i * m + n + c] = aff[c]; a[(n + c) * m + i] = aff[c]; }
    for (let c = 0; c < k; c++) b[i * k + c] = values[i * k + c];
  }
  return solve(a, b, m, k);
}

// ---------------------------------------------------------------- OpenCV pixel operations
// An image here: { data, width, height, channels, x0, y0, fullWidth, fullHeight } (a region of a
// larger image when x0/y0 are set; beyond the full image the border rule applies).
const plane = (data, width, height, channels = 1) => ({ data, width, height, channels, x0: 0, y0: 0, fullWidth: width, fullHeight: height });

// The float bilinear weights of each 1/32 px offset (fy * 32 + fx), as cv2.remap tabulates them.
const FW = new Float32Array(32 * 32 * 4);
for (let i = 0; i < 32 * 32; i++) {
  const ax = (i % 32) / 32, ay = Math.floor(i / 32) / 32;
  FW.set([(1 - ay) * (1 - ax), (1 - ay) * ax, ay * (1 - ax), ay * ax], 4 * i);
}

// cv2.remap(src, mapx - offset, mapy - offset, INTER_LINEAR, border) for n points (maps as
// float64 arrays; OpenCV takes them as float32 and rounds to 1/32 px). border: 'replicate' or a
// constant value. uint8 images: 15-bit weights and rounding; float images: float weights.
function remap(src, mx, my, offset, border, out = null, nch = src.channels) {
  const { data, width, channels: ch, x0: ox, y0: oy, fullWidth: W, fullHeight: H } = src;
  const n = mx.length, u8 = data instanceof Uint8Array || data instanceof Uint8ClampedArray;
  out ??= u8 ? new Uint8Array(n * nch) : new Float32Array(n * nch);
  const rep = border === 'replicate', cval = rep ? 0 : border;
  const at = (x, y, c) => {
    if (rep) { x = Math.min(W - 1, Math.max(0, x)); y = Math.min(H - 1, Math.max(0, y)); }
    else if (x < 0 || y < 0 || x >= W || y >= H) return cval;
    return data[((y - oy) * width + (x - ox)) * ch + c];
  };
  for (let i = 0; i < n; i++) {
    const X = rint(f32(mx[i] - offset) * 32), Y = rint(f32(my[i] - offset) * 32);
    const sx = X >> 5, sy = Y >> 5, fx = X & 31, fy = Y & 31;
    const o = i * nch;
    if (!rep && (sx >= W || sx + 1 < 0 || sy >= H || sy + 1 < 0)) {
      for (let c = 0; c < nch; c++) out[o + c] = cval;
      continue;
    }
    const inside = sx >= 0 && sy >= 0 && sx + 1 < W && sy + 1 < H;
    const i0 = ((sy - oy) * width + (sx - ox)) * ch, i1 = i0 + width * ch;
    if (u8) {
      const w00 = (32 - fy) * (32 - fx) * 32, w01 = (32 - fy) * fx * 32, w10 = fy * (32 - fx) * 32, w11 = fy * fx * 32;
      for (let c = 0; c < nch; c++) {
        const v = inside ? data[i0 + c] * w00 + data[i0 + ch + c] * w01 + data[i1 + c] * w10 + data[i1 + ch + c] * w11
          : at(sx, sy, c) * w00 + at(sx + 1, sy, c) * w01 + at(sx, sy + 1, c) * w10 + at(sx + 1, sy + 1, c) * w11;
        out[o + c] = (v + 16384) >> 15;
      }
    } else {
      const q = 4 * (fy * 32 + fx), w00 = FW[q], w01 = FW[q + 1], w10 = FW[q + 2], w11 = FW[q + 3];
      if (inside && nch === 1) out[o] = data[i0] * w00 + data[i0 + ch] * w01 + data[i1] * w10 + data[i1 + ch] * w11;
      else if (inside && nch === 3 && ch === 3) {
        out[o] = data[i0] * w00 + data[i0 + 3] * w01 + data[i1] * w10 + data[i1 + 3] * w11;
        out[o + 1] = data[i0 + 1] * w00 + data[i0 + 4] * w01 + data[i1 + 1] * w10 + data[i1 + 4] * w11;
        out[o + 2] = data[i0 + 2] * w00 + data[i0 + 5] * w01 + data[i1 + 2] * w10 + data[i1 + 5] * w11;
      } else {
        for (let c = 0; c < nch; c++) {
          out[o + c] = inside ? data[i0 + c] * w00 + data[i0 + ch + c] * w01 + data[i1 + c] * w10 + data[i1 + ch + c] * w11
            : at(sx, sy, c) * w00 + at(sx + 1, sy, c) * w01 + at(sx, sy + 1, c) * w10 + at(sx + 1, sy + 1, c) * w11;
        }
      }
    }
  }
  return out;
}

// cv2.GaussianBlur(img, (0, 0), sigma) on a size x size float image of `ch` channels,
// BORDER_REFLECT_101, with the kernel size OpenCV picks for float images (4 sigma a side).
function gaussianBlur(img, size, ch, sigma) {
  const ks = rint(sigma * 4 * 2 + 1) | 1, r = (ks - 1) >> 1;
  const k = new Float64Array(ks);
  let sum = 0;
  for (let i = 0; i < ks; i++) { k[i] = Math.exp(-((i - r) ** 2) / (2 * sigma * sigma)); sum += k[i]; }
  for (let i = 0; i < ks; i++) k[i] /= sum;
  const m = 2 * (size - 1), refl = new Int32Array(size + 2 * r);
  for (let p = -r; p < size + r; p++) { const q = Math.abs(p) % m; refl[p + r] = q < size ? q : m - q; }
  const n = size * size * ch, tmp = new Float64Array(n), out = new Float32Array(n);
  for (let y = 0; y < size; y++) {
    const row = y * size;
    for (let x = 0; x < size; x++) {
      for (let c = 0; c < ch; c++) {
        let v = 0;
        for (let i = 0; i < ks; i++) v += k[i] * img[(row + refl[x + i]) * ch + c];
        tmp[(row + x) * ch + c] = v;
      }
    }
  }
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      for (let c = 0; c < ch; c++) {
        let v = 0;
        for (let i = 0; i < ks; i++) v += k[i] * tmp[(refl[y + i] * size + x) * ch + c];
        out[(y * size + x) * ch + c] = v;
      }
    }
  }
  return out;
}

// Erode (op = Math.min) or dilate (Math.max) by a (2r+1)-square, pixels beyond the image ignored:
// a row pass then a column pass (a square's min/max is separable).
function morph(a, w, h, op, r = 1) {
  if (a instanceof Uint8Array && op === Math.min) return erodeBinary(a, w, h, r);
  const dilate = op === Math.max; // compared inline below: a function argument in the loop is not inlined
  const pass = (src, n, m, step, stride) => { // n lines of m pixels; `step` along a line, `stride` between lines
    const out = new src.constructor(src.length);
    for (let line = 0; line < n; line++) {
      const o = line * stride;
      for (let x = 0; x < m; x++) {
        let v = src[o + x * step];
        for (let k = Math.max(0, x - r), e = Math.min(m - 1, x + r); k <= e; k++) {
          const u = src[o + k * step];
          if (dilate ? u > v : u < v) v = u;
        }
        out[o + x * step] = v;
      }
    }
    return out;
  };
  return pass(pass(a, h, w, 1, w), w, h, w, 1);
}

// morph(a, w, h, Math.min, r) for a 0/1 mask in O(pixels): a pixel stays 1 when its window holds no 0
// (zeros counted by prefix sums along each line).
function erodeBinary(a, w, h, r) {
  const pass = (src, n, m, step, stride) => {
    const out = new Uint8Array(src.length), zeros = new Int32Array(m + 1);
    for (let line = 0; line < n; line++) {
      const o = line * stride;
      for (let x = 0; x < m; x++) zeros[x + 1] = zeros[x] + (src[o + x * step] === 0);
      for (let x = 0; x < m; x++) out[o + x * step] = zeros[Math.min(m, x + r + 1)] === zeros[Math.max(0, x - r)] ? 1 : 0;
    }
    return out;
  };
  return pass(pass(a, h, w, 1, w), w, h, w, 1);
}

// Convex hull (monotone chain) of [x, y] points, counter-clockwise.
function convexHull(pts) {
  const p = [...pts].sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  const cross = (o, a, b) => (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]);
  const half = (list) => {
    const h = [];
    for (const q of list) {
      while (h.length >= 2 && cross(h[h.length - 2], h[h.length - 1], q) <= 0) h.pop();
      h.push(q);
    }
    return h.slice(0, -1);
  };
  return [...half(p), ...half(p.reverse())];
}

// cv2.fillConvexPoly(m, hull as int32, 1) (vertices truncated to integers, as Python's astype):
// the pixels whose centres lie inside the polygon or on its edges.
function fillConvex(m, w, h, hull) {
  const v = hull.map(([x, y]) => [Math.trunc(x), Math.trunc(y)]);
  for (let y = 0; y < h; y++) {
    let lo = Infinity, hi = -Infinity;
    for (let i = 0; i < v.length; i++) {
      const [ax, ay] = v[i], [bx, by] = v[(i + 1) % v.length];
      if ((y < ay && y < by) || (y > ay && y > by)) continue;
      if (ay === by) { lo = Math.min(lo, ax, bx); hi = Math.max(hi, ax, bx); continue; }
      const x = ax + (y - ay) * (bx - ax) / (by - ay);
      lo = Math.min(lo, x); hi = Math.max(hi, x);
    }
    for (let x = Math.max(0, Math.ceil(lo - 0.5)); x <= Math.min(w - 1, Math.floor(hi + 0.5)); x++) m[y * w + x] = 1;
  }
}

// A priority queue of pixel indices on float32 times, first in first out among equal times (the
// order of OpenCV's CvPriorityQueueFloat): a binary heap on (time, arrival).
class TimeQueue {
  constructor(cap) { this.T = new Float32Array(cap); this.o = new Float64Array(cap); this.p = new Int32Array(cap); this.n = 0; this.k = 0; }
  less(a, b) { return this.T[a] < this.T[b] || (this.T[a] === this.T[b] && this.o[a] < this.o[b]); }
  swap(a, b) {
    const { T, o, p } = this;
    [T[a], T[b]] = [T[b], T[a]]; [o[a], o[b]] = [o[b], o[a]]; [p[a], p[b]] = [p[b], p[a]];
  }
  push(px, time) {
    let c = this.n++;
    this.T[c] = time; this.o[c] = this.k++; this.p[c] = px;
    while (c > 0) { const up = (c - 1) >> 1; if (!this.less(c, up)) break; this.swap(c, up); c = up; }
  }
  pop() {
    if (!this.n) return -1;
    const top = this.p[0];
    this.n--;
    this.T[0] = this.T[this.n]; this.o[0] = this.o[this.n]; this.p[0] = this.p[this.n];
    for (let c = 0; ;) {
      const l = 2 * c + 1, r = l + 1;
      let m = c;
      if (l < this.n && this.less(l, m)) m = l;
      if (r < this.n && this.less(r, m)) m = r;
      if (m === c) break;
      this.swap(c, m); c = m;
    }
    return top;
  }
}

// cv2.inpaint(img, hole, range, cv2.INPAINT_TELEA) on a size x size RGB image, in place, as
// OpenCV's modules/photo/src/inpaint.cpp computes it: the fast-marching times (float32) outside
// the hole within `range` (negated) and inside it, each hole pixel filled in order of arrival
// from the known pixels within `range`, with Telea's weights and gradient term.
function inpaintTelea(img, hole, size, range) {
  const KNOWN = 0, BAND = 1, INSIDE = 2, CHANGE = 3;
  const E = size + 2, N = E * E, NB = [-E, -1, E, 1]; // neighbours in OpenCV's order: up, left, down, right
  const mask = new Uint8Array(N), t = new Float32Array(N).fill(1e6);
  for (let y = 0; y < size; y++) for (let x = 0; x < size; x++) if (hole[y * size + x]) mask[(y + 1) * E + x + 1] = INSIDE;
  const cross = (src) => { // dilation by the 3x3 cross (cv2.dilate with CV_SHAPE_CROSS)
    const out = Uint8Array.from(src);
    for (let y = 0; y < E; y++) {
      for (let x = 0; x < E; x++) {
        const i = y * E + x;
        out[i] = Math.max(src[i], x > 0 ? src[i - 1] : 0, x < E - 1 ? src[i + 1] : 0, y > 0 ? src[i - E] : 0, y < E - 1 ? src[i + E] : 0);
      }
    }
    return out;
  };
  const border0 = (a) => { for (let i = 0; i < E; i++) { a[i] = 0; a[(E - 1) * E + i] = 0; a[i * E] = 0; a[i * E + E - 1] = 0; } };
  const solveFM = (i1, i2, fl) => {
    const a11 = t[i1], a22 = t[i2], m12 = Math.min(a11, a22);
    let sol;
    if (fl[i1] !== INSIDE) {
      if (fl[i2] !== INSIDE) sol = Math.abs(a11 - a22) >= 1 ? 1 + m12 : (a11 + a22 + Math.sqrt(2 - (a11 - a22) * (a11 - a22))) * 0.5;
      else sol = 1 + a11;
    } else sol = fl[i2] !== INSIDE ? 1 + a22 : 1 + m12;
    return f32(sol);
  };
  const dist = (p, fl) => Math.min(solveFM(p - E, p - 1, fl), solveFM(p + E, p - 1, fl), solveFM(p - E, p + 1, fl), solveFM(p + E, p + 1, fl));
  const band = cross(mask);
  for (let i = 0; i < N; i++) band[i] -= mask[i];
  border0(band);
  const heap = new TimeQueue(N), outer = new TimeQueue(N);
  for (let i = 0; i < N; i++) if (band[i]) { heap.push(i, 0); outer.push(i, 0); t[i] = 0; }
  // times outside the hole, negated (fl: the ring within `range` is INSIDE for this march)
  const fl = morph(mask, E, E, Math.max, range); // the (2 range + 1) square
  for (let i = 0; i < N; i++) fl[i] = Math.max(0, fl[i] - mask[i] - band[i]);
  border0(fl);
  for (let p; (p = outer.pop()) >= 0;) {
    fl[p] = CHANGE;
    for (const d of NB) {
      const q = p + d, i = Math.floor(q / E), j = q % E;
      if (i <= 0 || j <= 0 || fl[q] !== INSIDE) continue;
      t[q] = dist(q, fl); fl[q] = BAND; outer.push(q, t[q]);
    }
  }
  for (let i = 0; i < N; i++) if (fl[i] === CHANGE) t[i] = -t[i];
  for (let i = 0; i < N; i++) if (band[i]) mask[i] = BAND;
  // Telea
  const r2 = range * range, acc = new Float32Array(9); // Ia, Jx, Jy per colour
  for (let p; (p = heap.pop()) >= 0;) {
    mask[p] = KNOWN;
    for (const d of NB) {
      const q = p + d, i = Math.floor(q / E), j = q % E;
      if (i <= 1 || j <= 1 || i > E - 1 || j > E - 1 || mask[q] !== INSIDE) continue;
      const dq = dist(q, mask);
      t[q] = dq;
      const inR = mask[q + 1] === INSIDE, inL = mask[q - 1] === INSIDE, inD = mask[q + E] === INSIDE, inU = mask[q - E] === INSIDE;
      const gtx = !inR ? (!inL ? f32(f32(t[q + 1] - t[q - 1]) * 0.5) : f32(t[q + 1] - t[q])) : (!inL ? f32(t[q] - t[q - 1]) : 0);
      const gty = !inD ? (!inU ? f32(f32(t[q + E] - t[q - E]) * 0.5) : f32(t[q + E] - t[q])) : (!inU ? f32(t[q] - t[q - E]) : 0);
      acc.fill(0);
      let s = f32(1e-20);
      for (let k = i - range; k <= i + range; k++) {
        if (k <= 0 || k >= E - 1) continue;
        const km = k - 1 + (k === 1), kp = k - 1 - (k === E - 2);
        for (let l = j - range; l <= j + range; l++) {
          if (l <= 0 || l >= E - 1) continue;
          const kl = k * E + l;
          if (mask[kl] === INSIDE || (l - j) * (l - j) + (k - i) * (k - i) > r2) continue;
          const lm = l - 1 + (l === 1), lp = l - 1 - (l === E - 2);
          const ry = i - k, rx = j - l, len = f32(rx * rx + ry * ry);
          const dst = f32(1 / (len * Math.sqrt(len)));
          const lev = f32(1 / (1 + Math.abs(t[kl] - t[q])));
          let dir = f32(f32(rx * gtx) + f32(ry * gty));
          if (Math.abs(dir) <= 0.01) dir = f32(0.000001);
          const w = f32(Math.abs(f32(f32(dst * lev) * dir)));
          const xR = mask[kl + 1] !== INSIDE, xL = mask[kl - 1] !== INSIDE, yD = mask[kl + E] !== INSIDE, yU = mask[kl - E] !== INSIDE;
          const c0 = (km * size + lm) * 3;
          for (let c = 0; c < 3; c++) {
            const gix = xR ? (xL ? f32((img[(km * size + lp + 1) * 3 + c] - img[(km * size + lm - 1) * 3 + c]) * 2) : img[(km * size + lp + 1) * 3 + c] - img[c0 + c])
              : (xL ? img[(km * size + lp) * 3 + c] - img[(km * size + lm - 1) * 3 + c] : 0);
            const giy = yD ? (yU ? f32((img[((kp + 1) * size + lm) * 3 + c] - img[((km - 1) * size + lm) * 3 + c]) * 2) : img[((kp + 1) * size + lm) * 3 + c] - img[c0 + c])
              : (yU ? img[(kp * size + lm) * 3 + c] - img[((km - 1) * size + lm) * 3 + c] : 0);
            acc[c] += f32(w * img[c0 + c]);
            acc[3 + c] -= f32(w * f32(gix * rx));
            acc[6 + c] -= f32(w * f32(giy * ry));
          }
          s = f32(s + w);
        }
      }
      for (let c = 0; c < 3; c++) {
        const Jx = acc[3 + c], Jy = acc[6 + c];
        const sat = f32(f32(acc[c] / s) + f32(f32(Jx + Jy) / f32(f32(Math.sqrt(f32(f32(Jx * Jx) + f32(Jy * Jy)))) + f32(1e-20))) + 0.5);
        img[((i - 1) * size + (j - 1)) * 3 + c] = Math.max(0, Math.min(255, rint(sat)));
      }
      mask[q] = BAND;
      heap.push(q, dq);
    }
  }
}

// ---------------------------------------------------------------- the frontalizer
export class Geometry {
  // G: model.json's "geometry" (constants and the layout of geometry.bin); buf: geometry.bin.
  constructor(G, buf) {
    this.G = G;
    const c = G.canon;
    this.depthFull = new Float32Array(buf, G.offsets.depth_full, c * c); // unfloored, full depth
    this.gradX = new Float32Array(buf, G.offsets.grad_x, c * c);
    this.gradY = new Float32Array(buf, G.offsets.grad_y, c * c);
    this.mask = plane(new Float32Array(buf, G.offsets.face_mask, c * c), c, c);
    this.shape68 = G.shape68; // [[x, y, depth] x 68], full depth
    this.means = new Map();
    // The spline's solve over the mean face's 68 points and its evaluation on the lattice do not depend
    // on the face: done once, as runtime/geometry.py does (field = tpsLattice @ residuals).
    const px = this.shape68.map((p) => p[0]), py = this.shape68.map((p) => p[1]), Nf = G.field_n;
    const eye = new Float64Array(71 * 68);
    for (let i = 0; i < 68; i++) eye[i * 68 + i] = 1;
    const W = tpsFit(px, py, eye, G.tps_smoothing, 68); // (71, 68)
    this.tpsLattice = new Float64Array(Nf * Nf * 68);
    for (let r = 0; r < Nf; r++) {
      for (let q = 0; q < Nf; q++) {
        const x = G.field_lo + G.field_step * q, y = G.field_lo + G.field_step * r, row = (r * Nf + q) * 68;
        for (let j = 0; j < 68; j++) {
          const kj = tpsK(x, y, px[j], py[j]);
          for (let i = 0; i < 68; i++) this.tpsLattice[row + i] += kj * W[j * 68 + i];
        }
        for (let i = 0; i < 68; i++) this.tpsLattice[row + i] += W[68 * 68 + i] + x * W[69 * 68 + i] + y * W[70 * 68 + i];
      }
    }
  }

  // 3D points of this face's surface over model positions (xs, ys): the mean depth plus the field.
  // The mean face with its depth times k (runtime.geometry.GeometricFrontalizer.mean): its 68 points,
  // the floored depth (positions) and the normals of the unfloored one (visibility).
  mean(k = 1) {
    if (!this.means.has(k)) {
      const G = this.G, c = G.canon, kf = f32(k), n = c * c;
      const depth = new Float32Array(n), normals = new Float32Array(n * 3);
      for (let i = 0; i < n; i++) {
        depth[i] = Math.max(f32(this.depthFull[i] * kf), G.depth_floor);
        const nx = -f32(kf * this.gradX[i]), ny = -f32(kf * this.gradY[i]), len = Math.sqrt(nx * nx + ny * ny + 1);
        normals[3 * i] = nx / len; normals[3 * i + 1] = ny / len; normals[3 * i + 2] = 1 / len;
      }
      this.means.set(k, { k, shape68: this.shape68.map(([x, y, z]) => [x, y, z * k]), depth: plane(depth, c, c), normals: plane(normals, c, c, 3) });
    }
    return this.means.get(k);
  }

  // The depth scale for a face read at `yaw` (radians) at full depth (runtime.geometry DEPTH_SCALE).
  depthScale(yaw) {
    const G = this.G, [lo, hi] = G.depth_scale_ramp;
    const step = rint(ramp(Math.abs(yaw) * 180 / Math.PI - lo, hi - lo) * G.depth_scale_steps);
    return 1 - (1 - G.depth_scale) * step / G.depth_scale_steps;
  }

  // mean: the mean face the fit used; P: where to write the (n, 3) points (a new array when not
  // given). The intermediate arrays are kept between calls (fewer garbage collections).
  surface(xs, ys, field, mean, P = new Float64Array(xs.length * 3)) {
    const G = this.G, n = xs.length;
    if (this._n !== n) {
      this._n = n;
      this._scratch = [new Float64Array(n), new Float64Array(n), new Float32Array(n), new Float32Array(n * 3)];
    }
    const [fx, fy, z, d] = this._scratch;
    remap(mean.depth, xs, ys, 0.5, 'replicate', z);
    for (let i = 0; i < n; i++) { fx[i] = (xs[i] - G.field_lo) / G.field_step; fy[i] = (ys[i] - G.field_lo) / G.field_step; }
    remap(field, fx, fy, 0, 'replicate', d);
    for (let i = 0; i < n; i++) { P[3 * i] = xs[i] + d[3 * i]; P[3 * i + 1] = ys[i] + d[3 * i + 1]; P[3 * i + 2] = z[i] + d[3 * i + 2]; }
    return P;
  }

  // The camera [s R | t] and this face's shape from 68 points (x, y) in any pixel frame.
  fit(L, k = 1) {
    const mean = this.mean(k), X = mean.shape68, G = this.G;
    // 1. affine camera by least squares ([X 1] P = L), made a scaled rotation: R2 = (M M^T)^-1/2 M
    const A = new Float64Array(16), B = new Float64Array(8);
    for (let i = 0; i < 68; i++) {
      const r = [X[i][0], X[i][1], X[i][2], 1];
      for (let a = 0; a < 4; a++) {
        for (let b = 0; b < 4; b++) A[a * 4 + b] += r[a] * r[b];
        B[a * 2] += r[a] * L[i][0]; B[a * 2 + 1] += r[a] * L[i][1];
      }
    }
    const P = solve(A, B, 4, 2); // (4, 2): column k is image axis k
    const M = [[P[0], P[2], P[4]], [P[1], P[3], P[5]]];
    const g00 = M[0][0] ** 2 + M[0][1] ** 2 + M[0][2] ** 2, g11 = M[1][0] ** 2 + M[1][1] ** 2 + M[1][2] ** 2;
    const g01 = M[0][0] * M[1][0] + M[0][1] * M[1][1] + M[0][2] * M[1][2];
    const tr = (g00 + g11) / 2, disc = Math.sqrt(((g00 - g11) / 2) ** 2 + g01 * g01);
    const l1 = tr + disc, l2 = tr - disc;
    const th = 0.5 * Math.atan2(2 * g01, g00 - g11), c = Math.cos(th), sn = Math.sin(th);
    const i1 = 1 / Math.sqrt(l1), i2 = 1 / Math.sqrt(l2); // (M M^T)^-1/2 = V diag V^T
    const Q = [[c * c * i1 + sn * sn * i2, c * sn * (i1 - i2)], [c * sn * (i1 - i2), sn * sn * i1 + c * c * i2]];
    const R2 = [0, 1].map((r) => [0, 1, 2].map((k) => Q[r][0] * M[0][k] + Q[r][1] * M[1][k]));
    const s = (Math.sqrt(l1) + Math.sqrt(l2)) / 2;
    const proj = (Y, R = R2) => [s * (Y[0] * R[0][0] + Y[1] * R[0][1] + Y[2] * R[0][2]), s * (Y[0] * R[1][0] + Y[1] * R[1][1] + Y[2] * R[1][2])];
    let tx = 0, ty = 0;
    for (let i = 0; i < 68; i++) { const p = proj(X[i]); tx += L[i][0] - p[0]; ty += L[i][1] - p[1]; }
    const t = [tx / 68, ty / 68];
    const r3 = [R2[0][1] * R2[1][2] - R2[0][2] * R2[1][1], R2[0][2] * R2[1][0] - R2[0][0] * R2[1][2], R2[0][0] * R2[1][1] - R2[0][1] * R2[1][0]];
    const R = [R2[0], R2[1], r3];
    // 2. residuals back along the image plane, spread over the lattice by a thin-plate spline
    const d68 = new Float64Array(68 * 3);
    for (let i = 0; i < 68; i++) {
      const p = proj(X[i]), ex = L[i][0] - (p[0] + t[0]), ey = L[i][1] - (p[1] + t[1]);
      for (let k = 0; k < 3; k++) d68[i * 3 + k] = (ex * R2[0][k] + ey * R2[1][k]) / s;
    }
    const Nf = G.field_n, T = this.tpsLattice, field = new Float32Array(Nf * Nf * 3);
    for (let q = 0; q < Nf * Nf; q++) {
      let v0 = 0, v1 = 0, v2 = 0;
      for (let i = 0, o = q * 68; i < 68; i++) { const w = T[o + i]; v0 += w * d68[3 * i]; v1 += w * d68[3 * i + 1]; v2 += w * d68[3 * i + 2]; }
      field[3 * q] = v0; field[3 * q + 1] = v1; field[3 * q + 2] = v2;
    }
    const shape = X.map((Y, i) => [Y[0] + d68[i * 3], Y[1] + d68[i * 3 + 1], Y[2] + d68[i * 3 + 2]]);
    return { s, R, t, shape68: shape, field: plane(field, Nf, Nf, 3), yaw: Math.atan2(-r3[0], r3[2]), mean };
  }

  // The face of RGB(A) image `img` with 68 landmarks `lm` ([x, y] image px, hidden side included)
  // turned to frontal in the frame of runtime.pose.crop(img, square, size): size*size*3 RGB bytes.
  frontalize(img, lm, square, size) {
    const G = this.G, CANON = G.canon, n = size * size;
    const crop = boxAffine(...square, size);
    const points = lm.map(([x, y]) => apply(crop, x, y));
    let fit = this.fit(points);
    const depthScale = this.depthScale(fit.yaw);
    if (depthScale !== 1) fit = this.fit(points, depthScale); // a turned face: fitted again with the shallower mean face
    const meanFace = fit.mean;
    const { s, R, t, shape68: Y68, field, yaw } = fit;
    const camX = (P, i) => s * (P[i] * R[0][0] + P[i + 1] * R[0][1] + P[i + 2] * R[0][2]) + t[0];
    const camY = (P, i) => s * (P[i] * R[1][0] + P[i + 1] * R[1][1] + P[i + 2] * R[1][2]) + t[1];
    // 3. the frontal camera: R without its yaw, and a similarity keeping the eye and mouth midpoints
    const [lo, hi] = G.dead_zone_fade, dead = G.dead_zone * (1 - ramp(Math.abs(yaw) * 180 / Math.PI - lo, hi - lo));
    const turn = Math.sign(yaw) * Math.max(0, Math.abs(yaw) - dead * Math.PI / 180);
    const c = Math.cos(turn), sn = Math.sin(turn);
    const A2 = [0, 1].map((r) => [R[r][0] * c + R[r][2] * sn, R[r][1], -R[r][0] * sn + R[r][2] * c]);
    const mean = (a, b) => [0, 1, 2].map((k) => Y68.slice(a, b).reduce((v, p) => v + p[k], 0) / (b - a));
    const le = mean(36, 42), re = mean(42, 48);
    const em = [[0, 1, 2].map((k) => (le[k] + re[k]) / 2), [0, 1, 2].map((k) => (Y68[48][k] + Y68[54][k]) / 2)];
    const front0 = (Y) => [s * (Y[0] * A2[0][0] + Y[1] * A2[0][1] + Y[2] * A2[0][2]) + t[0], s * (Y[0] * A2[1][0] + Y[1] * A2[1][1] + Y[2] * A2[1][2]) + t[1]];
    const camP = (Y) => [camX(Y, 0), camY(Y, 0)];
    const [src0, src1] = em.map(front0), [dst0, dst1] = em.map(camP);
    // similarity taking src0, src1 onto dst0, dst1 (complex ratio)
    const ux = src1[0] - src0[0], uy = src1[1] - src0[1], vx = dst1[0] - dst0[0], vy = dst1[1] - dst0[1];
    const den = ux * ux + uy * uy, ar = (vx * ux + vy * uy) / den, ai = (vy * ux - vx * uy) / den;
    const S = [ar, -ai, dst0[0] - (ar * src0[0] - ai * src0[1]), ai, ar, dst0[1] - (ai * src0[0] + ar * src0[1])];
    const frontal = (Y) => { const p = front0(Y); return apply(S, p[0], p[1]); };
    // the same as one affine map of model points: F (2x3) and f0
    const F = [0, 1].map((r) => [0, 1, 2].map((k) => S[r * 3] * s * A2[0][k] + S[r * 3 + 1] * s * A2[1][k]));
    const f0 = frontal([0, 0, 0]);
    // 4. the surface point under each output pixel: fixed-point inverse of the frontal camera
    const l00 = S[0] * s * A2[0][0] + S[1] * s * A2[1][0], l01 = S[0] * s * A2[0][1] + S[1] * s * A2[1][1];
    const l10 = S[3] * s * A2[0][0] + S[4] * s * A2[1][0], l11 = S[3] * s * A2[0][1] + S[4] * s * A2[1][1];
    const det = l00 * l11 - l01 * l10, inv = [l11 / det, -l01 / det, -l10 / det, l00 / det];
    const o = frontal([0, 0, 0]);
    const xs = new Float64Array(n), ys = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      const dx = (i % size) - o[0], dy = Math.floor(i / size) - o[1];
      xs[i] = dx * inv[0] + dy * inv[1]; ys[i] = dx * inv[2] + dy * inv[3];
    }
    const P = new Float64Array(n * 3);
    for (let it = 0; it < G.iters; it++) {
      this.surface(xs, ys, field, meanFace, P);
      for (let i = 0; i < n; i++) {
        const X = P[3 * i], Y = P[3 * i + 1], Z = P[3 * i + 2];
        const dx = (i % size) - (F[0][0] * X + F[0][1] * Y + F[0][2] * Z + f0[0]);
        const dy = Math.floor(i / size) - (F[1][0] * X + F[1][1] * Y + F[1][2] * Z + f0[1]);
        xs[i] += dx * inv[0] + dy * inv[1]; ys[i] += dx * inv[2] + dy * inv[3];
      }
    }
    const tx = xs.map((x) => CANON - x);
    const ya = this.surface(xs, ys, field, meanFace), yb = this.surface(tx, ys, field, meanFace);
    const proj = (P) => { const X = new Float64Array(n), Yv = new Float64Array(n); for (let i = 0; i < n; i++) { X[i] = camX(P, 3 * i); Yv[i] = camY(P, 3 * i); } return [X, Yv]; };
    let [pax, pay] = proj(ya), [pbx, pby] = proj(yb);

    // visibility: the mean surface's normal . view direction, and a z-buffer for occlusion
    const gx = new Float64Array(CANON * CANON), gy = new Float64Array(CANON * CANON);
    for (let i = 0; i < CANON * CANON; i++) { gx[i] = i % CANON; gy[i] = Math.floor(i / CANON); }
    const yg = this.surface(gx, gy, field, meanFace);
    let zbuf = new Float32Array(CANON * CANON).fill(-1e9);
    const kc = CANON / size;
    for (let i = 0; i < CANON * CANON; i++) {
      const ix = rint(camX(yg, 3 * i) * kc), iy = rint(camY(yg, 3 * i) * kc);
      if (ix < 0 || iy < 0 || ix >= CANON || iy >= CANON) continue;
      const z = f32(yg[3 * i] * R[2][0] + yg[3 * i + 1] * R[2][1] + yg[3 * i + 2] * R[2][2]);
      if (z > zbuf[iy * CANON + ix]) zbuf[iy * CANON + ix] = z;
    }
    zbuf = morph(morph(zbuf, CANON, CANON, Math.max), CANON, CANON, Math.min); // close gaps
    const seen = (qx, qy, Pt, px_, py_) => {
      const nv = remap(meanFace.normals, qx, qy, 0.5, 'replicate');
      const vis = new Float64Array(n);
      for (let i = 0; i < n; i++) {
        const X = rint(f32(px_[i] * kc)), Yv = rint(f32(py_[i] * kc));
        const front = X < 0 || Yv < 0 || X >= CANON || Yv >= CANON ? -1e9 : zbuf[Yv * CANON + X];
        const z = Pt[3 * i] * R[2][0] + Pt[3 * i + 1] * R[2][1] + Pt[3 * i + 2] * R[2][2];
        vis[i] = z > f32(front - G.occlusion_eps) ? nv[3 * i] * R[2][0] + nv[3 * i + 1] * R[2][1] + nv[3 * i + 2] * R[2][2] : -1;
      }
      return vis;
    };
    const visA = seen(xs, ys, ya, pax, pay), visB = seen(tx, ys, yb, pbx, pby);

    // 5. samples from the photo at its own resolution (the crop's shrink rule), and the face region
    const ic = invertAffine(crop);
    const toImg = (X, Yv) => {
      for (let i = 0; i < n; i++) { const x = X[i], y = Yv[i]; X[i] = ic[0] * x + ic[1] * y + ic[2]; Yv[i] = ic[3] * x + ic[4] * y + ic[5]; }
    };
    toImg(pax, pay); toImg(pbx, pby);
    const Wd = img.fullWidth, H = img.fullHeight;
    let src = img, fs = 1;
    const k = Math.floor(square[2] / (size * 1.5));
    if (k >= 2) {
      const w = Math.max(1, Math.floor(Wd / k)), h = Math.max(1, Math.floor(H / k));
      fs = w / Wd;
      let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
      for (const [X, Yv] of [[pax, pay], [pbx, pby]]) {
        for (let i = 0; i < n; i++) { x0 = Math.min(x0, X[i]); x1 = Math.max(x1, X[i]); y0 = Math.min(y0, Yv[i]); y1 = Math.max(y1, Yv[i]); }
      }
      src = resizeArea(img, w, h, [Math.floor(x0 * fs) - 2, Math.floor(y0 * fs) - 2, Math.ceil(x1 * fs) + 3, Math.ceil(y1 * fs) + 3]);
    }
    const sample = (X, Yv) => remap(src, X.map((v) => v * fs), Yv.map((v) => v * fs), 0, 0, null, 3);
    const sa = sample(pax, pay), sb = sample(pbx, pby);
    // the photo's face region: hull of the landmarks and the brows lifted by FOREHEAD, eroded
    const up = [0, 1].map((a) => -(ic[a * 3] * s * R[0][1] + ic[a * 3 + 1] * s * R[1][1]) * CANON); // the model's up, in px
    const X68 = this.shape68, browMin = Math.min(...X68.slice(17, 27).map((p) => p[1]));
    const lift = G.forehead * (X68[8][1] - browMin) / CANON;
    const pts = [...lm, ...lm.slice(17, 27).map(([x, y]) => [x + lift * up[0], y + lift * up[1]])];
    const lox = Math.floor(Math.min(...pts.map((p) => f32(p[0])))) - 4, loy = Math.floor(Math.min(...pts.map((p) => f32(p[1])))) - 4;
    const hix = Math.ceil(Math.max(...pts.map((p) => f32(p[0])))) + 4, hiy = Math.ceil(Math.max(...pts.map((p) => f32(p[1])))) + 4;
    const rw = hix - lox, rh = hiy - loy;
    let region = new Uint8Array(rw * rh);
    fillConvex(region, rw, rh, convexHull(pts.map(([x, y]) => [f32(x) - lox, f32(y) - loy])));
    const side = Math.hypot(ic[0] * s * R[0][0] + ic[1] * s * R[1][0], ic[0] * s * R[0][1] + ic[1] * s * R[1][1], ic[0] * s * R[0][2] + ic[1] * s * R[1][2]) * CANON;
    region = morph(region, rw, rh, Math.min, Math.max(1, Math.floor(side / 100))); // cv2.erode 3x3, that many times
    const regionF = plane(Float32Array.from(region), rw, rh);
    const inside = (X, Yv) => {
      const v = remap(regionF, X.map((x) => x - lox), Yv.map((y) => y - loy), 0, 0);
      for (let i = 0; i < n; i++) if (!(X[i] >= 0 && Yv[i] >= 0 && X[i] <= Wd && Yv[i] <= H)) v[i] = 0;
      return v;
    };
    const mask = remap(this.mask, xs, ys, 0.5, 0);
    const inA = inside(pax, pay), inB = inside(pbx, pby);

    // the blend: the point itself unless its twin is seen much more squarely, both past GATE_YAW
    const gate = ramp(Math.abs(yaw * 180 / Math.PI) - G.gate_yaw, G.gate_ramp);
    const better0 = new Float32Array(n);
    for (let i = 0; i < n; i++) better0[i] = ramp(visB[i] - visA[i] - G.mirror_margin, 0.2);
    const better = gaussianBlur(better0, size, 1, size / 32);
    const out = new Uint8Array(n * 3), hole = new Uint8Array(n);
    let holes = 0;
    for (let i = 0; i < n; i++) {
      const ia = mask[i] > 0.05 ? inA[i] : 1, ib = mask[i] > 0.05 ? inB[i] : 1;
      const ra = ramp(visA[i] - G.vis_min, 0.1);
      let a = (1 - gate * (1 - ra)) * (1 - gate * (1 - ia));
      const b = ib * ramp(visB[i] - G.vis_min, 0.1) * (1 - a * (1 - better[i] * gate));
      a *= 1 - b;
      const lost = a + b < 0.05;
      for (let ch = 0; ch < 3; ch++) {
        const v = lost ? sa[3 * i + ch] : (sa[3 * i + ch] * a + sb[3 * i + ch] * b) / (a + b + 1e-6);
        out[3 * i + ch] = Math.floor(Math.min(255, Math.max(0, v)));
      }
      if (lost && mask[i] > 0.05) { hole[i] = 1; holes++; }
    }
    // 6. holes inside the face (outside it, the warp of the photo stays sharp)
    if (holes) inpaintTelea(out, hole, size, Math.min(100, Math.max(1, rint(size / 32))));
    return { rgb: out, yaw: yaw * 180 / Math.PI };
  }
}

// ---------------------------------------------------------------- 3DDFA_V2 (runtime/tddfa.py)
// (yaw, pitch, roll) in degrees from the 12 pose values [sR | t] (runtime.tddfa.angles).
export function angles(p) {
  const n1 = Math.hypot(p[0], p[1], p[2]), n2 = Math.hypot(p[4], p[5], p[6]);
  const r1 = [p[0] / n1, p[1] / n1, p[2] / n1], r2 = [p[4] / n2, p[5] / n2, p[6] / n2];
  const r3 = [r1[1] * r2[2] - r1[2] * r2[1], r1[2] * r2[0] - r1[0] * r2[2], r1[0] * r2[1] - r1[1] * r2[0]];
  const yaw = -Math.asin(Math.max(-1, Math.min(1, r3[0]))) * 180 / Math.PI;
  const c = Math.cos(yaw * Math.PI / 180) || 1e-9;
  return [yaw, Math.atan2(r3[1] / c, r3[2] / c) * 180 / Math.PI, -Math.atan2(r2[0] / c, r1[0] / c) * 180 / Math.PI];
}

// The second pass's square from 68 landmarks: sqrt(2) x their larger extent, on their bounds.
function squareOf(landmarks) {
  const xs = landmarks.map((p) => p[0]), ys = landmarks.map((p) => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
  return [(x0 + x1) / 2, (y0 + y1) / 2, Math.SQRT2 * Math.max(x1 - x0, y1 - y0), 0];
}

// Head pose and 68 landmarks for faces' canonical squares, in 3DDFA_V2's two passes
// (runtime.tddfa.Tddfa.read); `previous`: per square, the face's landmarks in the previous video
// frame or null: where given, the first pass is skipped and the second starts from them.
// crop(img, square, size, out, offset) is pose.js's runtime.pose.crop.
export async function readPose(ort, session, img, squares, T, crop, previous = null) {
  const s = T.input;
  const run = async (sqs) => {
    const x = new Uint8Array(sqs.length * s * s * 3);
    sqs.forEach((sq, i) => crop(img, sq, s, x, i * s * s * 3));
    const out = await session.run({ image: new ort.Tensor('uint8', x, [sqs.length, s, s, 3]) });
    const lm = out.landmarks.data, param = out.param.data, kp = param.length / sqs.length;
    return sqs.map((sq, i) => {
      const iv = invertAffine(boxAffine(...sq, s));
      const pts = [];
      for (let j = 0; j < 68; j++) pts.push(apply(iv, lm[i * 136 + j], lm[i * 136 + 68 + j]));
      return { landmarks: pts, param: Array.from(param.subarray(i * kp, i * kp + 12)), square: sq, input: x.subarray(i * s * s * 3, (i + 1) * s * s * 3) };
    });
  };
  const prev = previous ?? squares.map(() => null);
  const todo = squares.filter((_, i) => !prev[i]);
  const first = todo.length ? await run(todo.map(([cx, cy, side, a]) => [cx - Math.sin(a) * T.first_shift * side, cy + Math.cos(a) * T.first_shift * side, side * T.first_scale, a])) : [];
  let k = 0;
  const firsts = prev.map((p) => (p ? null : first[k++]));
  const second = await run(prev.map((p, i) => squareOf(p ?? firsts[i].landmarks)));
  return second.map((r, i) => { const [yaw, pitch, roll] = angles(r.param); return { ...r, yaw, pitch, roll, first: firsts[i] }; });
}
