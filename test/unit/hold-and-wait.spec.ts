import type { DataSource } from 'typeorm';
import type { Hold } from '../../lib/core/connection-hold';
import type { DataSourceTransaction } from '../../lib/core/data-source-transaction';
import type { UnitOfWork } from '../../lib/core/unit-of-work';
import { heldDuring, isOwnAcquisition } from '../../lib/guard/hold-and-wait';

// The rule alone, on stand-ins for a unit of work and its per-data-source transactions: only the
// fields the rule reads.
const main = { name: 'main' } as unknown as DataSource;
const reports = { name: 'reports' } as unknown as DataSource;

function source(dataSource: DataSource, hold: Hold, acquiring = false): DataSourceTransaction {
  return { entry: { dataSource }, connectionHold: { state: hold, acquiring } } as unknown as DataSourceTransaction;
}

function unit(sources: DataSourceTransaction[], state: UnitOfWork['state'] = 'open'): UnitOfWork {
  return { state, opened: () => sources } as unknown as UnitOfWork;
}

describe('the hold-and-wait rule', () => {
  it('lets an acquisition through while the unit of work has no data source yet', () => {
    expect(heldDuring(unit([]), main)).toBeUndefined();
  });

  it('lets it through while the unit of work holds nothing on any data source (lazy BEGIN: no query yet)', () => {
    expect(heldDuring(unit([source(main, 'none'), source(reports, 'none')]), main)).toBeUndefined();
  });

  it.each([
    ['holds', 'held'],
    ['is taking', 'taking'],
  ] as const)('refuses it while the unit of work %s a connection of the same pool', (_, hold) => {
    const own = source(main, hold);
    expect(heldDuring(unit([own]), main)).toBe(own);
  });

  it.each([
    ['holds', 'held'],
    ['is taking', 'taking'],
  ] as const)('refuses it while the unit of work %s a connection of another pool', (_, hold) => {
    const other = source(reports, hold);
    expect(heldDuring(unit([source(main, 'none'), other]), main)).toBe(other);
  });

  it('names the same pool first when the unit of work holds connections on several', () => {
    const onReports = source(reports, 'held');
    const onMain = source(main, 'held');
    expect(heldDuring(unit([onReports, onMain]), main)).toBe(onMain);
  });

  it("lets the unit of work's own QueryRunner take its connection, even while it holds one on another pool", () => {
    const taking = source(main, 'none', true);
    const ctx = unit([source(reports, 'held'), taking]);

    expect(heldDuring(ctx, main)).toBeUndefined();
    expect(isOwnAcquisition(ctx, main)).toBe(true);
    expect(isOwnAcquisition(ctx, reports)).toBe(false);
  });

  it.each(['settling', 'committed', 'rolledBack'] as const)('lets everything through once the unit of work is %s', (state) => {
    expect(heldDuring(unit([source(main, 'held')], state), main)).toBeUndefined();
  });
});
