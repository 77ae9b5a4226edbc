// LiveTable front end: a virtual-scrolled table that patches changed rows in place.
// The kernel owns rows and sorting; this module holds only the window it shows (plus a
// margin) and asks for another window when the user scrolls.

const MARGIN = 40;
// The kernel sends each cell's kind as one letter (widgets/table_model.py KIND_CODES).
const KINDS = {
  i: "int", f: "float", s: "str", b: "bool", n: "null",
  m: "missing", y: "bytes", a: "array", o: "object", d: "id", t: "date",
};

/**
 * Rows `pos .. pos + del` left and `ins` rows arrived at `pos`: move the entries after them.
 * @template T
 * @param {Map<number, T>} map  entries by position
 * @param {(entry: T) => void} drop  called for each entry that left
 * @returns {Map<number, T>}
 */
function splice(map, [pos, del, ins], drop) {
  const moved = new Map();
  for (const [p, entry] of map) {
    if (p >= pos + del) moved.set(p + ins - del, entry);
    else if (p < pos) moved.set(p, entry);
    else drop(entry);
  }
  return moved;
}

/** @param {{ model: any, el: HTMLElement }} ctx */
function render({ model, el }) {
  const root = document.createElement("div");
  root.className = "convex-live-table";
  const header = document.createElement("div");
  header.className = "clt-header";
  const title = document.createElement("span");
  title.className = "clt-title";
  const count = document.createElement("span");
  count.className = "clt-count";
  // How the table follows the store: a maintained view (row changes) or a re-run query.
  const mode = document.createElement("span");
  mode.className = "clt-mode";
  const status = document.createElement("div");
  status.className = "clt-status";
  header.append(title, count, mode);
  const scroller = document.createElement("div");
  scroller.className = "clt-scroller";
  const table = document.createElement("table");
  table.className = "clt-table live-table";
  const thead = table.createTHead();
  const headRow = thead.insertRow();
  const tbody = table.createTBody();
  // Padding rows stand in for the rows outside the window, so the scrollbar is true to size.
  const topPad = tbody.insertRow();
  const bottomPad = tbody.insertRow();
  topPad.className = bottomPad.className = "clt-pad";
  scroller.append(table);
  root.append(header, status, scroller);
  el.append(root);

  /** @type {Map<number, {key: string, cells: [string, string][]}>} */
  let cache = new Map();
  /** @type {Map<number, HTMLTableRowElement>} */
  let shown = new Map();
  let columns = model.get("columns") || [];
  let pending = false;
  let requested = { offset: -1, limit: 0 };
  const rowHeight = () => model.get("row_height");

  function drawHeader() {
    const sort = model.get("sort") || [];
    headRow.replaceChildren(
      ...columns.map((name) => {
        const th = document.createElement("th");
        th.textContent = name;
        th.dataset.column = name;
        if (sort[0] === name) th.dataset.sort = sort[1];
        if (model.get("sortable")) {
          th.title = "Sort (in the kernel, over all rows)";
          th.addEventListener("click", () => model.send({ type: "sort", column: name }));
        } else {
          th.title = "Rows in the query's order (pages load as you scroll)";
        }
        return th;
      }),
    );
  }

  function drawChrome() {
    title.textContent = model.get("title");
    const total = model.get("total");
    const rows = `${total.toLocaleString()} row${total === 1 ? "" : "s"}`;
    // A paginated query's count grows as pages load: say so rather than show "405+ rows".
    count.textContent = model.get("complete") ? rows : `${rows} loaded, loading more as you scroll`;
    count.dataset.complete = String(model.get("complete"));
    const how = model.get("mode");
    mode.textContent = how ? `live · ${how}` : "";
    mode.dataset.mode = how;
    const state = model.get("status");
    root.dataset.status = state;
    status.textContent =
      state === "loading" ? "Loading…" :
      state === "error" ? model.get("error") :
      state === "reconnecting" ? "Reconnecting… (showing the last result)" : "";
    scroller.style.maxHeight = `${model.get("height")}px`;
  }

  function visibleRange() {
    const first = Math.min(
      Math.floor(scroller.scrollTop / rowHeight()),
      Math.max(0, model.get("total") - 1),
    );
    // The scroller grows with its content up to `height`: size the window for the full height.
    const viewport = Math.max(scroller.clientHeight, model.get("height"));
    const count = Math.ceil(viewport / rowHeight()) + 1;
    return { first, count };
  }

  function requestWindow() {
    const { first, count } = visibleRange();
    const offset = Math.max(0, first - MARGIN);
    const limit = count + 2 * MARGIN;
    const covered = first >= requested.offset && first + count <= requested.offset + requested.limit;
    if (covered && requested.offset >= 0) return;
    requested = { offset, limit };
    model.send({ type: "window", offset, limit });
  }

  function drawRows(flash) {
    const total = model.get("total");
    const { first, count } = visibleRange();
    const last = Math.min(total, first + count);
    topPad.style.height = `${first * rowHeight()}px`;
    bottomPad.style.height = `${Math.max(0, total - last) * rowHeight()}px`;
    const selection = new Set(model.get("selection") || []);
    for (const [pos, tr] of shown) {
      if (pos < first || pos >= last) { tr.remove(); shown.delete(pos); }
    }
    let before = null;
    for (let pos = last - 1; pos >= first; pos--) {
      // A row not received yet is drawn as an empty placeholder, so heights stay exact.
      const entry = cache.get(pos) || { key: "", cells: columns.map(() => ["", "pending"]) };
      let tr = shown.get(pos);
      if (!tr) {
        tr = document.createElement("tr");
        shown.set(pos, tr);
        tbody.insertBefore(tr, before || bottomPad);
      }
      before = tr;
      const sameRow = tr.dataset.key === entry.key && entry.key !== "";
      tr.dataset.key = entry.key;
      tr.dataset.position = String(pos);
      tr.classList.toggle("clt-selected", selection.has(entry.key));
      while (tr.cells.length > entry.cells.length) tr.deleteCell(-1);
      entry.cells.forEach(([text, kind], i) => {
        const td = tr.cells[i] || tr.insertCell();
        if (td.textContent === text && td.dataset.kind === kind) return;
        td.textContent = text;
        td.dataset.kind = kind;
        td.title = text;
        if (flash && sameRow) {
          td.classList.remove("clt-flash");
          void td.offsetWidth; // restart the animation
          td.classList.add("clt-flash");
        }
      });
      if (flash && !sameRow) {
        tr.classList.remove("clt-flash-row");
        void tr.offsetWidth;
        tr.classList.add("clt-flash-row");
      }
    }
    // Keep DOM order equal to position order, between the padding rows.
    [...shown.entries()].sort((a, b) => a[0] - b[0]).forEach(([, tr]) => tbody.insertBefore(tr, bottomPad));
  }

  function schedule(flash) {
    if (flash) {
      // New data is drawn at once (the kernel already coalesces to ~30 updates/s);
      // scroll and state redraws wait for the next frame.
      drawChrome();
      drawRows(true);
      return;
    }
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; drawChrome(); drawRows(false); });
  }

  model.on("msg:custom", (msg, buffers) => {
    if (msg.type !== "rows" || !buffers || !buffers.length) return;
    const view = buffers[0] instanceof DataView ? buffers[0] : new DataView(buffers[0].buffer || buffers[0]);
    const data = JSON.parse(new TextDecoder().decode(view));
    if (data.columns) {
      columns = data.columns;
      cache.clear();
      drawHeader();
    }
    if (data.reset) cache.clear();
    // Rows removed or inserted before or inside the window: the rows held move with them
    // (and their <tr>s too, so a row that only moved is not redrawn or flashed).
    for (const change of data.splices || []) {
      cache = splice(cache, change, () => {});
      shown = splice(shown, change, (tr) => tr.remove());
    }
    const end = data.offset + Math.max(requested.limit, data.rows.length);
    for (const pos of [...cache.keys()]) {
      if (pos >= data.total || pos < data.offset || pos >= end) cache.delete(pos);
    }
    for (const [pos, key, texts, kinds = data.kinds] of data.rows) {
      cache.set(pos, { key, cells: texts.map((text, i) => [text, KINDS[kinds[i]]]) });
    }
    schedule(data.reason === "data");
  });
  model.on("change:columns", () => { columns = model.get("columns"); drawHeader(); });
  model.on("change:sort", drawHeader);
  model.on("change:total", () => schedule(false));
  model.on("change:complete", () => schedule(false));
  model.on("change:status", () => schedule(false));
  model.on("change:error", () => schedule(false));
  model.on("change:selection", () => schedule(false));

  tbody.addEventListener("click", (event) => {
    const tr = /** @type {HTMLElement} */ (event.target).closest("tr");
    if (!tr || !tr.dataset.key) return;
    const key = tr.dataset.key;
    const current = new Set(model.get("selection") || []);
    if (event.metaKey || event.ctrlKey) {
      current.has(key) ? current.delete(key) : current.add(key);
    } else {
      current.clear();
      current.add(key);
    }
    const keys = [...current];
    model.set("selection", keys);
    model.save_changes();
    model.send({ type: "select", keys });
  });
  scroller.addEventListener("scroll", () => { requestWindow(); schedule(false); }, { passive: true });

  drawHeader();
  drawChrome();
  model.send({ type: "ready" });
  requestWindow();
  return () => root.remove();
}

export default { render };
