// Annotation state: named, coloured objects; per object and frame the prompts and the mask the
// server answered; an undo/redo history of operations. Entries are replaced, never edited, so
// undo restores a frame's earlier prompts together with their mask (no new request).

export const PALETTE = ["#3fb7a6", "#e5534b", "#d4a72c", "#6cb6ff", "#b083f0", "#f69d50", "#57ab5a", "#ff7eb6"];

export function frameKey(axis, frame) { return `${axis}:${frame}`; }

export class Annotation {
  constructor(onChange) {
    this.onChange = onChange;
    this.reset();
  }

  reset() {
    this.objects = [];
    this.activeId = null;
    this.nextId = 1;
    this.undoStack = [];
    this.redoStack = [];
  }

  get active() { return this.objects.find((o) => o.id === this.activeId) || null; }

  newObject() {
    const id = this.nextId++;
    const obj = { id, name: `object ${id}`, color: PALETTE[(id - 1) % PALETTE.length],
                  visible: true, frames: new Map() };
    const index = this.objects.length;
    const previous = this.activeId;
    this._do({
      apply: () => { this.objects.splice(index, 0, obj); this.activeId = id; },
      revert: () => { this.objects.splice(this.objects.indexOf(obj), 1); this.activeId = previous; },
    });
    return obj;
  }

  deleteObject(obj) {
    const index = this.objects.indexOf(obj);
    if (index < 0) return;
    const wasActive = this.activeId === obj.id;
    this._do({
      apply: () => {
        this.objects.splice(index, 1);
        if (wasActive) this.activeId = this.objects.length ? this.objects[Math.max(0, index - 1)].id : null;
      },
      revert: () => { this.objects.splice(index, 0, obj); if (wasActive) this.activeId = obj.id; },
    });
  }

  // Replace the entry of (obj, key) with `after` (null clears it), as one undoable step.
  setEntry(obj, key, after) {
    const before = obj.frames.get(key) || null;
    if (before === after) return;
    const put = (entry) => { if (entry) obj.frames.set(key, entry); else obj.frames.delete(key); };
    this._do({ apply: () => { put(after); this.activeId = obj.id; },
               revert: () => { put(before); this.activeId = obj.id; } });
  }

  // Replace several entries of one object at once (a propagation), as one undoable step.
  setEntries(obj, entries) {
    const before = new Map([...entries.keys()].map((k) => [k, obj.frames.get(k) || null]));
    const put = (map) => {
      for (const [k, e] of map) { if (e) obj.frames.set(k, e); else obj.frames.delete(k); }
    };
    this._do({ apply: () => { put(entries); this.activeId = obj.id; },
               revert: () => { put(before); this.activeId = obj.id; } });
  }

  _do(op) {
    op.apply();
    this.undoStack.push(op);
    this.redoStack = [];
    this.onChange();
  }

  undo() {
    const op = this.undoStack.pop();
    if (!op) return false;
    op.revert();
    this.redoStack.push(op);
    this.onChange();
    return true;
  }

  redo() {
    const op = this.redoStack.pop();
    if (!op) return false;
    op.apply();
    this.undoStack.push(op);
    this.onChange();
    return true;
  }

  // Export payload: objects with at least one answered mask, mask ids of every frame.
  exportObjects() {
    const out = [];
    for (const obj of this.objects) {
      const masks = [...obj.frames.values()].filter((e) => e.result).map((e) => e.result.mask_id);
      if (masks.length) out.push({ name: obj.name.trim() || `object ${obj.id}`, color: obj.color, masks });
    }
    return out;
  }
}
