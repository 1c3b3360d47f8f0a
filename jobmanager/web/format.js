// How the dashboard writes times, durations, sizes, counts, rates and shares.

const pad = (n, width = 2) => String(n).padStart(width, '0');

export function formatTime(ms) {
  if (typeof ms !== 'number' || ms <= 0) return '–';
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function formatDuration(ms) {
  if (typeof ms !== 'number' || ms < 0 || !Number.isFinite(ms)) return '–';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const seconds = ms / 1000;
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
  const s = Math.floor(seconds) % 60;
  const m = Math.floor(seconds / 60) % 60;
  const hours = Math.floor(seconds / 3600);
  if (hours === 0) return `${m}m ${pad(s)}s`;
  if (hours < 48) return `${hours}h ${pad(m)}m`;
  return `${Math.floor(hours / 24)}d ${hours % 24}h`;
}

export function formatBytes(bytes) {
  if (typeof bytes !== 'number' || bytes < 0) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${Math.round(value)} B` : `${value.toFixed(value < 10 ? 2 : 1)} ${units[unit]}`;
}

export function formatCount(n) {
  if (typeof n !== 'number') return '–';
  if (n < 10000) return String(Math.round(n));
  const units = [[1e12, 'T'], [1e9, 'G'], [1e6, 'M'], [1e3, 'k']];
  for (const [size, suffix] of units) {
    if (n >= size) return `${(n / size).toFixed(n / size < 10 ? 2 : 1)}${suffix}`;
  }
  return String(n);
}

export function formatRate(perSecond) {
  if (typeof perSecond !== 'number' || !Number.isFinite(perSecond)) return '… rec/s';
  return `${formatCount(perSecond)} rec/s`;
}

export const percent = (ratio) => (typeof ratio === 'number' ? `${Math.round(ratio * 100)}%` : '–');
