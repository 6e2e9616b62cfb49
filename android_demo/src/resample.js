// OpenCV's resampling, reproduced to the byte: cv2.warpAffine (INTER_LINEAR, constant 0
// border) and cv2.resize (INTER_AREA, downscaling), the two that runtime/pose.py and
// runtime/detect.py use to make the networks' inputs. Checked against OpenCV by the browser
// parity test (identical bytes) and by comparing with cv2 on random squares and sizes.
//
// An image: { data (RGBA or RGB bytes), channels (4 or 3), width, height } with, for a region
// of a larger image, x0/y0 (its origin there) and fullWidth/fullHeight (the larger image's
// size; outside it the warp reads the 0 border).
export const imageFromRgba = (data, width, height) => ({ data, channels: 4, width, height, x0: 0, y0: 0, fullWidth: width, fullHeight: height });
export const imageFromRgb = (data, width, height) => ({ data, channels: 3, width, height, x0: 0, y0: 0, fullWidth: width, fullHeight: height });

// Round half to even, like OpenCV's cvRound / saturate_cast<int>(double) and Python's round.
export function rint(v) {
  const r = Math.round(v);
  return r - v === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

// cv2.invertAffineTransform of a 2x3 affine [a, b, c, d, e, f].
export function invertAffine([m0, m1, m2, m3, m4, m5]) {
  let D = m0 * m4 - m1 * m3;
  D = D !== 0 ? 1 / D : 0;
  const a11 = m4 * D, a22 = m0 * D, a12 = -m1 * D, a21 = -m3 * D;
  return [a11, a12, -a11 * m2 - a12 * m5, a21, a22, -a21 * m2 - a22 * m5];
}

// cv2.warpAffine(src, M, (size, size), INTER_LINEAR, BORDER_CONSTANT, 0) into out (RGB bytes)
// at `offset`. OpenCV's fixed point: the inverse map's coordinates are rounded to 1/32 px
// (AB_BITS = 10, INTER_BITS = 5) and the 4 weights are (32-fx)(32-fy)*32 ... out of 2^15.
export function warpAffine(src, M, size, out, offset = 0) {
  const iM = invertAffine(M);
  const { data, channels: ch, width, x0: ox, y0: oy, fullWidth: W, fullHeight: H } = src;
  const adelta = new Float64Array(size), bdelta = new Float64Array(size);
  for (let x = 0; x < size; x++) { adelta[x] = rint(iM[0] * x * 1024); bdelta[x] = rint(iM[3] * x * 1024); }
  const px = (x, y, c) => (x < 0 || y < 0 || x >= W || y >= H ? 0 : data[((y - oy) * width + (x - ox)) * ch + c]);
  let o = offset;
  for (let y = 0; y < size; y++) {
    const X0 = rint((iM[1] * y + iM[2]) * 1024) + 16, Y0 = rint((iM[4] * y + iM[5]) * 1024) + 16;
    for (let x = 0; x < size; x++) {
      const X = Math.floor((X0 + adelta[x]) / 32), Y = Math.floor((Y0 + bdelta[x]) / 32);
      const sx = Math.floor(X / 32), sy = Math.floor(Y / 32), fx = X - sx * 32, fy = Y - sy * 32;
      const w00 = (32 - fy) * (32 - fx) * 32, w01 = (32 - fy) * fx * 32, w10 = fy * (32 - fx) * 32, w11 = fy * fx * 32;
      if (sx >= 0 && sy >= 0 && sx + 1 < W && sy + 1 < H) {
        const i0 = ((sy - oy) * width + (sx - ox)) * ch, i1 = i0 + width * ch;
        for (let c = 0; c < 3; c++) {
          out[o++] = (data[i0 + c] * w00 + data[i0 + ch + c] * w01 + data[i1 + c] * w10 + data[i1 + ch + c] * w11 + 16384) >> 15;
        }
      } else if (sx >= W || sy >= H || sx + 1 < 0 || sy + 1 < 0) {
        out[o++] = 0; out[o++] = 0; out[o++] = 0;
      } else {
        for (let c = 0; c < 3; c++) {
          out[o++] = (px(sx, sy, c) * w00 + px(sx + 1, sy, c) * w01 + px(sx, sy + 1, c) * w10 + px(sx + 1, sy + 1, c) * w11 + 16384) >> 15;
        }
      }
    }
  }
}

// OpenCV's INTER_AREA tables (computeResizeAreaTab) for destination indices [d0, d1): the
// source index and float32 weight of each (destination, source) pair, destinations ascending.
function areaTab(ssize, dsize, scale, d0, d1) {
  const d = [], s = [], a = [];
  for (let i = 0; i < dsize && i < d1; i++) {
    const f1 = i * scale, f2 = f1 + scale, cell = Math.min(scale, ssize - f1);
    const s2 = Math.min(Math.floor(f2), ssize - 1);
    const s1 = Math.min(Math.ceil(f1), s2);
    if (i < d0) continue;
    if (s1 - f1 > 1e-3) { d.push(i); s.push(s1 - 1); a.push((s1 - f1) / cell); }
    for (let j = s1; j < s2; j++) { d.push(i); s.push(j); a.push(1 / cell); }
    if (f2 - s2 > 1e-3) { d.push(i); s.push(s2); a.push(Math.min(Math.min(f2 - s2, 1), cell) / cell); }
  }
  return { d: Int32Array.from(d), s: Int32Array.from(s), a: Float32Array.from(a) };
}

// cv2.resize(src, (dw, dh), interpolation=INTER_AREA) for dw <= W, dh <= H (src a whole image),
// computing only the destination cols/rows [c0, c1) x [r0, r1) (each output pixel depends only
// on its own source cell). OpenCV's arithmetic: integer scales: k = 2 -> (sum + 2) >> 2,
// otherwise round(float32(sum * float32(1/k^2))); other scales: float32 accumulation of the
// area weights, row by row. Returns an RGB region image.
export function resizeArea(src, dw, dh, [c0, r0, c1, r1] = [0, 0, dw, dh]) {
  const W = src.fullWidth, H = src.fullHeight;
  c0 = Math.max(0, c0); r0 = Math.max(0, r0); c1 = Math.max(c0, Math.min(dw, c1)); r1 = Math.max(r0, Math.min(dh, r1));
  const w = c1 - c0, h = r1 - r0, w3 = w * 3;
  const out = new Uint8Array(w * h * 3);
  const { data, channels: ch } = src;
  const scaleX = 1 / (dw / W), scaleY = 1 / (dh / H); // as cv::resize computes them
  const kx = rint(scaleX), ky = rint(scaleY);
  if (Math.abs(scaleX - kx) < Number.EPSILON && Math.abs(scaleY - ky) < Number.EPSILON) {
    const two = kx === 2 && ky === 2, inv = Math.fround(1 / (kx * ky));
    const sum = new Int32Array(w3);
    for (let y = 0; y < h; y++) {
      sum.fill(0);
      for (let j = 0; j < ky; j++) {
        let p = (((r0 + y) * ky + j) * W + c0 * kx) * ch;
        for (let o = 0; o < w3; o += 3) {
          for (let i = 0; i < kx; i++, p += ch) { sum[o] += data[p]; sum[o + 1] += data[p + 1]; sum[o + 2] += data[p + 2]; }
        }
      }
      const row = y * w3;
      if (two) for (let i = 0; i < w3; i++) out[row + i] = (sum[i] + 2) >> 2;
      else for (let i = 0; i < w3; i++) out[row + i] = Math.min(255, rint(Math.fround(sum[i] * inv)));
    }
  } else {
    const xt = areaTab(W, dw, scaleX, c0, c1), yt = areaTab(H, dh, scaleY, r0, r1);
    const buf = new Float32Array(w3), sum = new Float32Array(w3);
    const nx = xt.d.length;
    let prev = -1;
    const flush = () => { if (prev >= 0) for (let i = 0, o = (prev - r0) * w3; i < w3; i++) out[o + i] = Math.min(255, rint(sum[i])); };
    for (let t = 0; t < yt.d.length; t++) {
      const dy = yt.d[t], beta = yt.a[t], row = yt.s[t] * W;
      buf.fill(0);
      for (let q = 0; q < nx; q++) {
        const b = (xt.d[q] - c0) * 3, s = (row + xt.s[q]) * ch, alpha = xt.a[q];
        buf[b] += Math.fround(data[s] * alpha);
        buf[b + 1] += Math.fround(data[s + 1] * alpha);
        buf[b + 2] += Math.fround(data[s + 2] * alpha);
      }
      if (dy !== prev) {
        flush();
        prev = dy;
        for (let i = 0; i < w3; i++) sum[i] = Math.fround(beta * buf[i]);
      } else {
        for (let i = 0; i < w3; i++) sum[i] += Math.fround(beta * buf[i]);
      }
    }
    flush();
  }
  return { data: out, channels: 3, width: w, height: h, x0: c0, y0: r0, fullWidth: dw, fullHeight: dh };
}
