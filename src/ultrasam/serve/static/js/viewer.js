// The image stage: the frame (an <img>), the mask overlay (a canvas at image resolution) and
// the prompt layer (a canvas at screen resolution). Converts pointer positions to image
// pixels and reports clicks, right/Alt clicks and drags as prompts.

const DRAG_PX = 5;  // a press that moves further than this (screen px) draws a box

function hexToRgb(hex) {
  const v = parseInt(hex.slice(1), 16);
  return [(v >> 16) & 255, (v >> 8) & 255, v & 255];
}

export class Viewer {
  constructor({ stage, box, img, overlay, ui, onPoint, onBox }) {
    Object.assign(this, { stage, box, img, overlay, ui, onPoint, onBox });
    this.width = 0; this.height = 0; this.scale = 1;
    this.prompts = { points: [], box: null, color: "#3fb7a6" };
    this.drag = null;
    ui.addEventListener("contextmenu", (e) => e.preventDefault());
    ui.addEventListener("pointerdown", (e) => this._down(e));
    ui.addEventListener("pointermove", (e) => this._move(e));
    ui.addEventListener("pointerup", (e) => this._up(e));
    window.addEventListener("resize", () => this.fit());
  }

  // Show a frame; resolves when the pixels are on screen.
  show(url, width, height) {
    const sizeChanged = width !== this.width || height !== this.height;
    this.width = width; this.height = height;
    if (sizeChanged) { this.overlay.width = width; this.overlay.height = height; }
    this.box.hidden = false;
    this.fit();
    return new Promise((resolve, reject) => {
      this.img.onload = () => resolve();
      this.img.onerror = () => reject(new Error("could not load the frame image"));
      this.img.src = url;
    });
  }

  fit() {
    if (!this.width) return;
    const aw = this.stage.clientWidth - 24, ah = this.stage.clientHeight - 24;
    this.scale = Math.max(0.05, Math.min(aw / this.width, ah / this.height));
    const w = Math.round(this.width * this.scale), h = Math.round(this.height * this.scale);
    for (const el of [this.img, this.overlay, this.ui]) {
      el.style.width = `${w}px`; el.style.height = `${h}px`;
    }
    const dpr = window.devicePixelRatio || 1;
    this.ui.width = Math.round(w * dpr); this.ui.height = Math.round(h * dpr);
    this.drawPrompts();
  }

  // Image-pixel coordinates (continuous, 0..width) of a pointer event.
  toImage(e) {
    const r = this.ui.getBoundingClientRect();
    const x = ((e.clientX - r.left) / r.width) * this.width;
    const y = ((e.clientY - r.top) / r.height) * this.height;
    return [Math.min(Math.max(x, 0), this.width), Math.min(Math.max(y, 0), this.height)];
  }

  _down(e) {
    if (!this.width) return;
    this.ui.setPointerCapture(e.pointerId);
    this.drag = { x0: e.clientX, y0: e.clientY, start: this.toImage(e), button: e.button,
                  alt: e.altKey, boxing: false, end: null };
  }

  _move(e) {
    const d = this.drag;
    if (!d) return;
    if (!d.boxing && Math.hypot(e.clientX - d.x0, e.clientY - d.y0) > DRAG_PX && d.button === 0) d.boxing = true;
    if (d.boxing) { d.end = this.toImage(e); this.drawPrompts(); }
  }

  _up(e) {
    const d = this.drag;
    this.drag = null;
    if (!d) return;
    if (d.boxing) {
      const [x0, y0] = d.start, [x1, y1] = this.toImage(e);
      const b = [Math.min(x0, x1), Math.min(y0, y1), Math.max(x0, x1), Math.max(y0, y1)];
      this.drawPrompts();
      if (b[2] - b[0] >= 1 && b[3] - b[1] >= 1) this.onBox(b.map((v) => Math.round(v * 10) / 10));
      return;
    }
    const negative = d.button === 2 || d.alt;
    if (d.button !== 0 && d.button !== 2) return;
    const [x, y] = d.start;
    this.onPoint(Math.round(x * 10) / 10, Math.round(y * 10) / 10, negative ? 0 : 1);
  }

  cancelDrag() { this.drag = null; this.drawPrompts(); }

  setPrompts(points, box, color) {
    this.prompts = { points: points || [], box: box || null, color };
    this.drawPrompts();
  }

  drawPrompts() {
    const ctx = this.ui.getContext("2d");
    const k = this.ui.width / Math.max(1, this.width);
    ctx.clearRect(0, 0, this.ui.width, this.ui.height);
    const dpr = window.devicePixelRatio || 1;
    const box = this.prompts.box;
    const boxes = [];
    if (box) boxes.push({ b: box, dash: [] });
    if (this.drag && this.drag.boxing && this.drag.end) {
      const [x0, y0] = this.drag.start, [x1, y1] = this.drag.end;
      boxes.push({ b: [Math.min(x0, x1), Math.min(y0, y1), Math.max(x0, x1), Math.max(y0, y1)], dash: [6 * dpr, 4 * dpr] });
    }
    for (const { b, dash } of boxes) {
      ctx.setLineDash(dash);
      ctx.lineWidth = 2 * dpr;
      ctx.strokeStyle = this.prompts.color;
      ctx.strokeRect(b[0] * k, b[1] * k, (b[2] - b[0]) * k, (b[3] - b[1]) * k);
    }
    ctx.setLineDash([]);
    for (const [x, y, label] of this.prompts.points) {
      ctx.beginPath();
      ctx.arc(x * k, y * k, 5.5 * dpr, 0, 2 * Math.PI);
      ctx.fillStyle = label ? "#2ecc71" : "#e5534b";
      ctx.fill();
      ctx.lineWidth = 1.5 * dpr;
      ctx.strokeStyle = "#fff";
      ctx.stroke();
      if (!label) {  // a minus sign marks negative points for colour-blind users
        ctx.beginPath(); ctx.moveTo(x * k - 3 * dpr, y * k); ctx.lineTo(x * k + 3 * dpr, y * k); ctx.stroke();
      }
    }
  }

  // layers: [{mask: Uint8Array (row-major, width*height), color: "#rrggbb", active: bool}]
  drawMasks(layers, opacity, visible) {
    const { width: w, height: h } = this;
    const ctx = this.overlay.getContext("2d");
    ctx.clearRect(0, 0, w, h);
    if (!visible || !layers.length || !w) return;
    const image = ctx.createImageData(w, h);
    const px = image.data;
    const fill = Math.round(255 * opacity);
    for (const { mask, color } of layers) {
      if (!mask || mask.length !== w * h) continue;
      const [r, g, b] = hexToRgb(color);
      for (let y = 0; y < h; y++) {
        const row = y * w;
        for (let x = 0; x < w; x++) {
          const i = row + x;
          if (!mask[i]) continue;
          // Boundary pixels are drawn opaque so the outline stays visible at low opacity.
          const edge = x === 0 || y === 0 || x === w - 1 || y === h - 1 ||
            !mask[i - 1] || !mask[i + 1] || !mask[i - w] || !mask[i + w];
          const o = 4 * i;
          px[o] = r; px[o + 1] = g; px[o + 2] = b;
          px[o + 3] = edge ? Math.max(fill, 230) : fill;
        }
      }
    }
    ctx.putImageData(image, 0, 0);
  }
}
