// The jobmanager's REST API (jobmanager/src/rest/mod.rs) as the dashboard calls it.

/** How long a GET may take. */
const READ_TIMEOUT_MS = 15000;

/** Job states that do not change any more. */
export const TERMINAL = new Set(['FINISHED', 'FAILED', 'CANCELED']);

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** Calls the REST API; throws an ApiError with the API's `{"errors": [...]}` message. */
export async function api(path, options = {}) {
  let response;
  try {
    // Reads give up after a while, so that one lost request cannot stop the refresh.
    const timeout = options.method ? {} : { signal: AbortSignal.timeout(READ_TIMEOUT_MS) };
    response = await fetch(path, { headers: { Accept: 'application/json' }, ...timeout, ...options });
  } catch (e) {
    throw new ApiError(0, `cannot reach the jobmanager (${e.message})`);
  }
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  if (!response.ok) {
    const errors = body && Array.isArray(body.errors) ? body.errors.filter(Boolean) : [];
    throw new ApiError(response.status, errors.length ? errors.join('; ') : `${response.status} ${response.statusText}`);
  }
  return body;
}

export const jobPath = (id) => `/jobs/${encodeURIComponent(id)}`;
export const vertexPath = (job, vertex) => `${jobPath(job)}/vertices/${encodeURIComponent(vertex)}`;

/** The first of `keys` that `object` has (the API's Flink names beside Weir's older ones). */
export function pick(object, ...keys) {
  for (const key of keys) {
    if (object && object[key] !== undefined && object[key] !== null) return object[key];
  }
  return undefined;
}
