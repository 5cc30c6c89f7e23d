/*
 * Aligned text tables for the terminal: the first column left-aligned
 * (names), the others right-aligned (numbers), two spaces between columns.
 */
export function table(head: readonly string[], rows: readonly (readonly string[])[]): string[] {
  const widths = head.map((h, c) => Math.max(h.length, ...rows.map((r) => (r[c] ?? '').length)));
  const line = (cells: readonly string[]) =>
    cells.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join('  ').trimEnd();
  return [line(head), ...rows.map(line)];
}

/** Percent with one decimal: 0.1234 -> "12.3%". */
export const percent = (part: number, whole: number): string => (whole ? `${((100 * part) / whole).toFixed(1)}%` : '-');

/** The last component of a guest root, for column headings. */
export const shortName = (path: string): string => path.replace(/\/+$/, '').split('/').pop() || path;
