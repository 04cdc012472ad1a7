// Renders this server's OpenAPI document (/openapi.json) as a readable page, offline: every
// operation with its description, parameters, request body and responses, schemas inlined.

const main = document.getElementById("docs");

function resolve(schema, spec, depth = 0) {
  if (!schema || depth > 6) return schema;
  if (schema.$ref) {
    const name = schema.$ref.split("/").pop();
    return resolve(spec.components.schemas[name], spec, depth + 1);
  }
  const out = Array.isArray(schema) ? [] : {};
  for (const [k, v] of Object.entries(schema)) {
    out[k] = v && typeof v === "object" ? resolve(v, spec, depth + 1) : v;
  }
  return out;
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  for (const c of children) e.append(c);
  return e;
}

function block(title, value) {
  return [el("h4", {}, title), el("pre", {}, typeof value === "string" ? value : JSON.stringify(value, null, 2))];
}

async function start() {
  const spec = await (await fetch("/openapi.json")).json();
  main.replaceChildren(el("h1", {}, `${spec.info.title} ${spec.info.version}`),
                       el("p", {}, spec.info.description || ""));
  for (const [path, ops] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      const body = el("div", { class: "op-body" }, el("p", {}, op.description || ""));
      if (op.parameters && op.parameters.length) {
        body.append(...block("parameters", op.parameters.map((p) => ({
          name: p.name, in: p.in, required: !!p.required, description: p.description,
          schema: resolve(p.schema, spec) }))));
      }
      if (op.requestBody) {
        for (const [type, c] of Object.entries(op.requestBody.content)) {
          body.append(...block(`request body (${type})`, resolve(c.schema, spec)));
        }
      }
      for (const [code, r] of Object.entries(op.responses || {})) {
        const content = r.content ? Object.entries(r.content).map(([t, c]) => ({ type: t, schema: resolve(c.schema, spec) })) : [];
        body.append(...block(`${code} ${r.description || ""}`, content.length ? content : "(no body)"));
      }
      const summary = el("summary", {}, el("span", { class: `method ${method}` }, method.toUpperCase()),
                         el("span", { class: "path" }, path), el("span", { class: "muted" }, op.summary || ""));
      main.append(el("details", { class: "op" }, summary, body));
    }
  }
}

start().catch((e) => { main.textContent = `Could not load /openapi.json: ${e.message}`; });
