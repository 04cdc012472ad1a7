// HTTP API client: every call returns parsed JSON or throws an Error carrying the server's
// one-line message ({"detail": ...}). Same-origin requests carry the session cookie set by
// the server when the page was opened with ?token=.

async function check(response) {
  if (response.ok) return response;
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && body.detail) message = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
  } catch (_) { /* not JSON */ }
  const error = new Error(message);
  error.status = response.status;
  throw error;
}

export async function health() {
  return (await check(await fetch("/health"))).json();
}

export async function upload(file) {
  const form = new FormData();
  form.append("file", file, file.name);
  return (await check(await fetch("/api/images", { method: "POST", body: form }))).json();
}

export async function segment(imageId, body) {
  const r = await fetch(`/api/images/${imageId}/segment`, {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
  });
  return (await check(r)).json();
}

export async function remove(imageId) {
  await check(await fetch(`/api/images/${imageId}`, { method: "DELETE" }));
}

export function frameUrl(imageId, index, axis) {
  return `/api/images/${imageId}/frames/${index}?axis=${axis}`;
}

export async function exportFile(imageId, kind, objects) {
  const r = await check(await fetch(`/api/images/${imageId}/export/${kind}`, {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ objects }),
  }));
  const disposition = r.headers.get("content-disposition") || "";
  const match = /filename="([^"]+)"/.exec(disposition);
  return { blob: await r.blob(), filename: match ? match[1] : `export.${kind}` };
}

export async function propagate(imageId, body) {
  const r = await fetch(`/api/images/${imageId}/propagate`, {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
  });
  return (await check(r)).json();
}
