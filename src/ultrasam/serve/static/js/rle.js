// COCO compressed RLE (pycocotools' string form) -> H x W mask, row-major Uint8Array.
// The string holds run lengths, alternately 0s and 1s, over the column-major pixel order;
// each run is a variable-length integer of 5-bit groups (+48 to be printable), stored as the
// difference to the run two places back after the first two.

export function decodeCounts(s) {
  const counts = [];
  let p = 0;
  while (p < s.length) {
    let x = 0, k = 0, more = 1;
    while (more) {
      const c = s.charCodeAt(p) - 48;
      x |= (c & 0x1f) << (5 * k);
      more = c & 0x20;
      p += 1; k += 1;
      if (!more && (c & 0x10)) x |= -1 << (5 * k);
    }
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  return counts;
}

export function decodeRle(rle) {
  const [h, w] = rle.size;
  const mask = new Uint8Array(h * w);
  const counts = decodeCounts(rle.counts);
  let i = 0;  // column-major index
  let value = 0;
  for (const n of counts) {
    if (value) {
      for (let j = i; j < i + n; j++) {
        const col = Math.floor(j / h), row = j - col * h;
        mask[row * w + col] = 1;
      }
    }
    i += n;
    value ^= 1;
  }
  return { mask, width: w, height: h };
}
