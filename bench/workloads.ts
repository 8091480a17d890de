/**
 * The workloads: which routes a run loads, and the requests it sends. Plain data and request
 * generation (no Nest, no TypeORM): the runner builds its requests here, and every server serves
 * the routes named here.
 */

export const WORKLOADS = ['transfer', 'read', 'nodb', 'mix', 'gql-write', 'gql-read'] as const;
export type Workload = (typeof WORKLOADS)[number];

export const ROUTES = {
  /** POST, JSON `{ from, to, amount }`: UPDATE, UPDATE, INSERT in one transaction. Answers `{ id }`. */
  transfer: '/transfer',
  /** GET `?from=&to=`: two SELECTs by primary key in one transaction. Answers `{ from, to }` (the rows). */
  balances: '/balances',
  /** GET: no database at all (a health check, a cache hit). Answers `{ ok: true }`. */
  ping: '/ping',
  /** POST, JSON `{ query, variables }`: the GraphQL variants' one route (graphql.ts). */
  graphql: '/graphql',
} as const;

/** The GraphQL operations: a mutation (the write route's unit), a query whose field resolver reads a second row. */
export const GQL_TRANSFER =
  'mutation Transfer($from: Int!, $to: Int!, $amount: Int!) { transfer(from: $from, to: $to, amount: $amount) { id } }';
export const GQL_PAIR =
  'query Pair($from: Int!, $to: Int!) { pair(from: $from, to: $to) { from { id balance } to { id balance } } }';

export interface WorkloadInfo {
  title: string;
  /** Whether its requests query the database (the guard's own cost is measured only on those). */
  touchesDb: boolean;
}

export const WORKLOAD_INFO: Record<Workload, WorkloadInfo> = {
  transfer: { title: 'write: POST /transfer (UPDATE, UPDATE, INSERT in one transaction)', touchesDb: true },
  read: { title: 'read: GET /balances (2 SELECTs in one transaction)', touchesDb: true },
  nodb: { title: 'no database: GET /ping', touchesDb: false },
  mix: { title: 'mix: 80 % GET /balances, 20 % POST /transfer', touchesDb: true },
  'gql-write': { title: 'GraphQL write: mutation transfer (UPDATE, UPDATE, INSERT in one transaction)', touchesDb: true },
  'gql-read': { title: 'GraphQL read: query pair (root resolver SELECT, @ResolveField SELECT)', touchesDb: true },
};

/** Whether a workload is served at POST /graphql (only the GraphQL variants serve it). */
export function isGraphQLWorkload(workload: Workload): boolean {
  return workload.startsWith('gql-');
}

/**
 * Every request carries this bearer token: the realistic app's auth guard checks it, every other
 * variant ignores it (each gets the same bytes).
 */
export const AUTHORIZATION = 'Bearer bench';

/** Share of writes in the `mix` workload. */
export const MIX_WRITE_SHARE = 0.2;

export interface BenchRequest {
  method: 'GET' | 'POST';
  path: string;
  headers: Record<string, string>;
  body?: string;
}

/** Two random distinct accounts: with 10k rows, 50 concurrent transfers rarely wait on each other's locks. */
function pair(accounts: number): [number, number] {
  const from = 1 + Math.floor(Math.random() * accounts);
  let to = 1 + Math.floor(Math.random() * (accounts - 1));
  if (to >= from) to += 1;
  return [from, to];
}

function transferRequest(accounts: number, suffix: string): BenchRequest {
  const [from, to] = pair(accounts);
  return {
    method: 'POST',
    path: ROUTES.transfer + suffix,
    headers: { 'content-type': 'application/json', authorization: AUTHORIZATION },
    body: JSON.stringify({ from, to, amount: 1 + Math.floor(Math.random() * 100) }),
  };
}

function balancesRequest(accounts: number, suffix: string): BenchRequest {
  const [from, to] = pair(accounts);
  return { method: 'GET', path: `${ROUTES.balances}${suffix}?from=${from}&to=${to}`, headers: { authorization: AUTHORIZATION } };
}

export function graphQLRequest(query: string, variables: Record<string, number>): BenchRequest {
  return {
    method: 'POST',
    path: ROUTES.graphql,
    headers: { 'content-type': 'application/json', authorization: AUTHORIZATION },
    body: JSON.stringify({ query, variables }),
  };
}

/**
 * The next request of a workload. `suffix` selects a variant's own routes (`-guard-off`); routes
 * that touch no database have none.
 */
export function nextRequest(workload: Workload, accounts: number, suffix = ''): BenchRequest {
  switch (workload) {
    case 'transfer':
      return transferRequest(accounts, suffix);
    case 'read':
      return balancesRequest(accounts, suffix);
    case 'nodb':
      return { method: 'GET', path: ROUTES.ping, headers: { authorization: AUTHORIZATION } };
    case 'mix':
      return Math.random() < MIX_WRITE_SHARE ? transferRequest(accounts, suffix) : balancesRequest(accounts, suffix);
    case 'gql-write': {
      const [from, to] = pair(accounts);
      return graphQLRequest(GQL_TRANSFER, { from, to, amount: 1 + Math.floor(Math.random() * 100) });
    }
    case 'gql-read': {
      const [from, to] = pair(accounts);
      return graphQLRequest(GQL_PAIR, { from, to });
    }
  }
}
