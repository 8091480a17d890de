import { DurationWindow, type DurationSummary } from './duration-window';

/** How many of the latest units of work a route's figures are computed over. A power of two. */
export const ROUTE_WINDOW_SIZE = 256;
/** Distinct routes and `run()` names kept per data source; later ones are counted under {@link OTHER_ROUTES}. */
export const MAX_ROUTES = 500;
/** Where units of work of routes beyond {@link MAX_ROUTES} are counted (`run()` names made per call, say). */
export const OTHER_ROUTES = '(other routes)';

/**
 * How long one route's (or one `run()` name's) units of work held their connection of a data source,
 * and how that time split: `databaseMs` while a statement of the unit was in flight (BEGIN and COMMIT
 * included), `idleMs` idle in transaction (the connection held while the code waited on something else).
 */
export interface RouteHoldStats {
  heldMs: DurationSummary;
  databaseMs: DurationSummary;
  idleMs: DurationSummary;
}

/** The live figures of one route on one data source: three rings of the latest {@link ROUTE_WINDOW_SIZE}. */
export class RouteHoldTimes {
  private readonly held = new DurationWindow(ROUTE_WINDOW_SIZE);
  private readonly database = new DurationWindow(ROUTE_WINDOW_SIZE);
  private readonly idle = new DurationWindow(ROUTE_WINDOW_SIZE);

  record(heldMs: number, databaseMs: number): void {
    // The database time is measured inside the hold, from other clock readings: never more than it.
    const database = Math.min(databaseMs, heldMs);
    this.held.record(heldMs);
    this.database.record(database);
    this.idle.record(heldMs - database);
  }

  summary(): RouteHoldStats {
    return { heldMs: this.held.summary(), databaseMs: this.database.summary(), idleMs: this.idle.summary() };
  }
}

/** One data source's routes, by label (`POST /transfers`, a `run()` name), created on their first hold. */
export class RouteHoldTable {
  private readonly routes = new Map<string, RouteHoldTimes>();

  /** The figures of `label`; a route past the {@link MAX_ROUTES}th is counted under {@link OTHER_ROUTES}. */
  of(label: string): RouteHoldTimes {
    let times = this.routes.get(label);
    if (times === undefined) {
      const key = this.routes.size < MAX_ROUTES ? label : OTHER_ROUTES;
      times = this.routes.get(key) ?? new RouteHoldTimes();
      this.routes.set(key, times);
    }
    return times;
  }

  snapshot(): Record<string, RouteHoldStats> {
    const routes: Record<string, RouteHoldStats> = {};
    for (const [label, times] of this.routes) routes[label] = times.summary();
    return routes;
  }
}
