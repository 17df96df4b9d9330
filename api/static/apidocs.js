// Herald API docs: renders /api/openapi.json and lets you try each operation. No external resources.
"use strict";

const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child);
  return node;
};

function resolve(doc, schema) {
  while (schema && schema.$ref) schema = doc.components.schemas[schema.$ref.split("/").pop()];
  return schema || {};
}

function example(doc, schema, depth = 0) {
  schema = resolve(doc, schema);
  if (depth > 4) return null;
  if (schema.enum) return schema.enum[0];
  const type = Array.isArray(schema.type) ? schema.type.find((t) => t !== "null") : schema.type;
  if (type === "object" || schema.properties) {
    const out = {};
    for (const [name, prop] of Object.entries(schema.properties || {})) {
      if ((schema.required || []).includes(name) || depth === 0) out[name] = example(doc, prop, depth + 1);
    }
    return out;
  }
  if (type === "array") return [example(doc, schema.items || {}, depth + 1)];
  if (type === "integer" || type === "number") return schema.minimum ?? 1;
  if (type === "boolean") return true;
  if (schema.format === "date-time") return new Date().toISOString();
  return "string";
}

function paramsTable(params) {
  const table = el("table", {}, el("tr", {}, el("th", {}, "name"), el("th", {}, "in"), el("th", {}, "value")));
  const inputs = [];
  for (const p of params) {
    const input = el("input", { placeholder: (p.schema.enum || []).join(" | ") || p.schema.type || "" });
    inputs.push([p, input]);
    table.append(el("tr", {}, el("td", {}, p.name + (p.required ? " *" : "")), el("td", {}, p.in),
      el("td", {}, input, el("div", {}, p.description || ""))));
  }
  return [table, inputs];
}

function operation(doc, path, method, op) {
  const details = el("details", { class: "op" });
  details.append(el("summary", {}, el("span", { class: `method ${method}` }, method),
    el("span", { class: "path" }, path), el("span", {}, op.summary || "")));
  const body = el("div", { class: "body" });
  const [table, inputs] = paramsTable(op.parameters || []);
  if (inputs.length) body.append(table);
  let bodyInput = null;
  if (op.requestBody) {
    const schema = op.requestBody.content["application/json"].schema;
    bodyInput = el("textarea", {});
    bodyInput.value = JSON.stringify(example(doc, schema), null, 2);
    body.append(el("h4", {}, "Request body"), bodyInput);
  }
  const responses = el("table", {}, el("tr", {}, el("th", {}, "status"), el("th", {}, "meaning")));
  for (const [code, r] of Object.entries(op.responses)) responses.append(el("tr", {}, el("td", {}, code), el("td", {}, r.description)));
  body.append(el("h4", {}, "Responses"), responses);
  const output = el("pre", {}, "");
  const button = el("button", {}, "Try it");
  button.addEventListener("click", async () => {
    let url = path;
    const query = new URLSearchParams();
    const headers = {};
    for (const [p, input] of inputs) {
      if (!input.value) continue;
      if (p.in === "path") url = url.replace(`{${p.name}}`, encodeURIComponent(input.value));
      else if (p.in === "query") query.append(p.name, input.value);
      else if (p.in === "header") headers[p.name] = input.value;
    }
    const token = document.getElementById("token").value.trim();
    if (token) headers.Authorization = `Bearer ${token}`;
    const init = { method: method.toUpperCase(), headers };
    if (bodyInput) { init.body = bodyInput.value; headers["Content-Type"] = "application/json"; }
    const qs = query.toString();
    try {
      const resp = await fetch(url + (qs ? `?${qs}` : ""), init);
      const text = await resp.text();
      let shown = text;
      try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch (e) { /* not JSON: show as is */ }
      output.textContent = `${resp.status} ${resp.statusText}\n${resp.headers.get("content-type") || ""}\n\n${shown}`;
    } catch (err) {
      output.textContent = String(err);
    }
  });
  body.append(button, output);
  details.append(body);
  return details;
}

async function main() {
  const main = document.getElementById("operations");
  const doc = await (await fetch("/api/openapi.json")).json();
  document.getElementById("description").textContent = `${doc.info.description} (version ${doc.info.version})`;
  main.textContent = "";
  const byTag = new Map();
  for (const [path, ops] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      const tag = (op.tags || ["other"])[0];
      if (!byTag.has(tag)) byTag.set(tag, []);
      byTag.get(tag).push(operation(doc, path, method, op));
    }
  }
  for (const [tag, nodes] of byTag) main.append(el("h2", {}, tag), ...nodes);
}

main().catch((err) => { document.getElementById("operations").textContent = `Could not load the API document: ${err}`; });
