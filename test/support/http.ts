/** Requests to an app under test, over a real socket (`fetch`). */

/** An HTTP response: status and parsed JSON body (undefined when empty). */
export interface Reply<T = any> {
  status: number;
  body: T;
}

/** Sends a request with a JSON body (if any; a string is sent as is) and reads the JSON answer. */
export async function call<T = any>(
  method: string,
  url: string,
  body?: unknown,
  headers?: Record<string, string>,
): Promise<Reply<T>> {
  const response = await fetch(url, {
    method,
    headers: body === undefined ? headers : { ...headers, 'content-type': 'application/json' },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, body: (text === '' ? undefined : JSON.parse(text)) as T };
}

/** POSTs `body` as JSON and reads the JSON answer. */
export async function postJson<T = unknown>(url: string, body: object = {}): Promise<Reply<T>> {
  return call<T>('POST', url, body);
}

/** POSTs `body` as JSON and hands back the raw response (`init` can add e.g. an abort `signal`). */
export async function post(url: string, body: unknown = {}, init: RequestInit = {}): Promise<Response> {
  return fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
    ...init,
  });
}

/** The raw Node response under an Express response or a Fastify reply. */
export function rawResponse(response: unknown): { headersSent: boolean; writableEnded: boolean } {
  const reply = response as { raw?: { headersSent: boolean; writableEnded: boolean } };
  return reply.raw ?? (response as { headersSent: boolean; writableEnded: boolean });
}
