// Sortable tables (click a header; numbers sort as numbers, from data-sort when a cell has one)
// and the index page's filters. No library, no network.
// A number, or a mean±std cell (sorted by its mean); "2026-12-02 01:10" or "0/5" are text.
const NUMBER = /^[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?(±\S*)?$/i;

function cellValue(row, column) {
  const cell = row.cells[column];
  const raw = cell.dataset.sort !== undefined ? cell.dataset.sort : cell.textContent.trim();
  return NUMBER.test(raw) ? parseFloat(raw) : raw.toLowerCase();
}

function sortTable(table, column, header) {
  const body = table.tBodies[0];
  const rows = Array.from(body.rows);
  const ascending = header.getAttribute("aria-sort") !== "ascending";
  table.querySelectorAll("th").forEach((th) => th.removeAttribute("aria-sort"));
  header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  rows.sort((a, b) => {
    const x = cellValue(a, column);
    const y = cellValue(b, column);
    let order;
    if (typeof x === typeof y) order = x < y ? -1 : x > y ? 1 : 0;
    else order = typeof x === "number" ? -1 : 1;
    return ascending ? order : -order;
  });
  rows.forEach((row) => body.appendChild(row));
}

function applyFilters() {
  const text = document.getElementById("filter");
  const task = document.getElementById("task-filter");
  if (!text || !task) return;
  const words = text.value.toLowerCase().split(/\s+/).filter(Boolean);
  let shown = 0;
  document.querySelectorAll("#runs tbody tr").forEach((row) => {
    const content = row.textContent.toLowerCase();
    const visible = (!task.value || row.dataset.task === task.value) && words.every((w) => content.includes(w));
    row.hidden = !visible;
    shown += visible ? 1 : 0;
  });
  document.getElementById("shown").textContent = String(shown);
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("table.sortable").forEach((table) => {
    table.querySelectorAll("thead th").forEach((header, column) => {
      header.addEventListener("click", () => sortTable(table, column, header));
    });
  });
  ["filter", "task-filter"].forEach((id) => {
    const element = document.getElementById(id);
    if (element) element.addEventListener("input", applyFilters);
  });
  applyFilters();
});
