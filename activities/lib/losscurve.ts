// The loss curve of a run as a standalone SVG (open it in a browser): train loss per step, eval loss points,
// a dashed line at every resume with its step. Drawn from the metrics log (metrics.ts), so it shows the steps
// that produced the exported model, whatever interrupted the run. Plain SVG text: a line chart of two series
// needs no DOM or plotting runtime, and the file has no external references.
import type { MetricsView } from './metrics.js';

const W = 800, H = 420, L = 64, R = 24, T = 40, B = 56;

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/** Round axis ticks: about `n` of them, on 1/2/5 x 10^k. */
function ticks(lo: number, hi: number, n: number): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / n;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

export function lossCurveSvg(v: MetricsView, opts: { title: string; upToStep?: number }): string {
  const upTo = opts.upToStep ?? Number.POSITIVE_INFINITY;
  const steps = v.steps.filter((s) => s.step <= upTo && Number.isFinite(s.loss));
  const evals = v.evals.filter((e) => e.step <= upTo && Number.isFinite(e.loss));
  const resumes = v.starts.filter((s) => s.resume && s.step <= upTo);
  const xs = [...steps.map((s) => s.step), ...evals.map((e) => e.step), 0];
  const ys = [...steps.map((s) => s.loss), ...evals.map((e) => e.loss)];
  const x0 = 0, x1 = Math.max(1, ...xs);
  let y0 = ys.length ? Math.min(...ys) : 0, y1 = ys.length ? Math.max(...ys) : 1;
  if (y1 - y0 < 1e-6) { y0 -= 0.5; y1 += 0.5; }
  const pad = (y1 - y0) * 0.05;
  y0 = Math.max(0, y0 - pad);
  y1 += pad;
  const px = (x: number) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const py = (y: number) => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
  const f = (n: number) => n.toFixed(1);
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="22" text-anchor="middle" font-size="15">${esc(opts.title)}</text>`,
  ];
  for (const t of ticks(x0, x1, 8))
    out.push(`<line x1="${f(px(t))}" y1="${T}" x2="${f(px(t))}" y2="${H - B}" stroke="#eee"/>`,
      `<text x="${f(px(t))}" y="${H - B + 16}" text-anchor="middle">${t}</text>`);
  for (const t of ticks(y0, y1, 8))
    out.push(`<line x1="${L}" y1="${f(py(t))}" x2="${W - R}" y2="${f(py(t))}" stroke="#eee"/>`,
      `<text x="${L - 6}" y="${f(py(t) + 4)}" text-anchor="end">${t}</text>`);
  out.push(`<rect x="${L}" y="${T}" width="${W - L - R}" height="${H - T - B}" fill="none" stroke="#888"/>`,
    `<text x="${(L + W - R) / 2}" y="${H - 18}" text-anchor="middle">step</text>`,
    `<text transform="translate(16 ${(T + H - B) / 2}) rotate(-90)" text-anchor="middle">loss</text>`);
  for (const s of resumes) {
    const why = s.resume?.cause ? `: ${s.resume.cause}` : '';
    out.push(`<g class="resume"><title>${esc(`resumed at step ${s.step} (attempt ${s.attempt})${why}`)}</title>` +
      `<line x1="${f(px(s.step))}" y1="${T}" x2="${f(px(s.step))}" y2="${H - B}" stroke="#d62728" stroke-dasharray="4 3"/>` +
      `<text x="${f(px(s.step) + 3)}" y="${T + 12}" fill="#d62728">resume @${s.step}</text></g>`);
  }
  if (steps.length)
    out.push(`<polyline class="train" fill="none" stroke="#1f77b4" stroke-width="1.5" points="${steps.map((s) => `${f(px(s.step))},${f(py(s.loss))}`).join(' ')}"/>`);
  for (const e of evals)
    out.push(`<circle class="eval" cx="${f(px(e.step))}" cy="${f(py(e.loss))}" r="4" fill="#ff7f0e"><title>eval loss ${e.loss.toFixed(4)} at step ${e.step}</title></circle>`);
  // Legend.
  const lx = W - R - 170;
  out.push(`<line x1="${lx}" y1="${T + 14}" x2="${lx + 24}" y2="${T + 14}" stroke="#1f77b4" stroke-width="1.5"/><text x="${lx + 30}" y="${T + 18}">train loss</text>`,
    `<circle cx="${lx + 12}" cy="${T + 32}" r="4" fill="#ff7f0e"/><text x="${lx + 30}" y="${T + 36}">eval loss</text>`,
    `<line x1="${lx}" y1="${T + 50}" x2="${lx + 24}" y2="${T + 50}" stroke="#d62728" stroke-dasharray="4 3"/><text x="${lx + 30}" y="${T + 54}">resume</text>`);
  if (!steps.length) out.push(`<text x="${W / 2}" y="${H / 2}" text-anchor="middle" fill="#888">no training steps logged</text>`);
  out.push('</svg>');
  return out.join('\n') + '\n';
}
