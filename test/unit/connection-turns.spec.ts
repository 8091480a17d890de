import { ConnectionTurns, type Level } from '../../lib/core/connection-turns';

const savepointOf = (parent: Level): Level => ({ parent, ended: false });

describe('ConnectionTurns', () => {
  it('hands the connection to one statement at a time, in call order', async () => {
    const turns = new ConnectionTurns();
    const order: string[] = [];

    expect(turns.tryTake(turns.root)).toBe(true);
    const second = turns.take(turns.root).then(() => order.push('second'));
    const third = turns.take(turns.root).then(() => order.push('third'));
    await Promise.resolve();
    expect(order).toEqual([]);

    turns.give();
    await second;
    expect(order).toEqual(['second']);
    turns.give();
    await third;
    turns.give();
    expect(order).toEqual(['second', 'third']);
    expect(turns.tryTake(turns.root)).toBe(true);
  });

  it('keeps the enclosing level waiting while a savepoint is open, and lets it go once the savepoint closed', async () => {
    const turns = new ConnectionTurns();
    const savepoint = savepointOf(turns.root);
    expect(turns.tryTake(turns.root)).toBe(true);
    turns.enter(savepoint);
    turns.give();

    let outerRan = false;
    const outer = turns.take(turns.root).then(() => {
      outerRan = true;
    });
    // The savepoint's own statements go first, however many there are.
    expect(turns.tryTake(savepoint)).toBe(true);
    turns.give();
    await Promise.resolve();
    expect(outerRan).toBe(false);

    expect(turns.tryTake(savepoint)).toBe(true);
    savepoint.ended = true;
    turns.enter(turns.root);
    turns.give();
    await outer;
    expect(outerRan).toBe(true);
    turns.give();
  });

  it('runs a sibling savepoint only after the first one closed', async () => {
    const turns = new ConnectionTurns();
    const first = savepointOf(turns.root);
    expect(turns.tryTake(turns.root)).toBe(true);
    turns.enter(first);
    turns.give();

    const second = turns.take(turns.root);
    let secondStarted = false;
    void second.then(() => {
      secondStarted = true;
    });
    expect(turns.tryTake(first)).toBe(true);
    turns.give();
    await Promise.resolve();
    expect(secondStarted).toBe(false);

    expect(turns.tryTake(first)).toBe(true);
    first.ended = true;
    turns.enter(turns.root);
    turns.give();
    await second;
    expect(secondStarted).toBe(true);
  });

  it('gives a statement of a closed savepoint to the level around it', () => {
    const turns = new ConnectionTurns();
    const closed: Level = { parent: turns.root, ended: true };
    expect(turns.tryTake(closed)).toBe(true);
  });

  it('lets every waiter go, and takes no more waiters, once the unit of work ended', async () => {
    const turns = new ConnectionTurns();
    const savepoint = savepointOf(turns.root);
    expect(turns.tryTake(turns.root)).toBe(true);
    turns.enter(savepoint);
    const waiting = turns.take(turns.root);

    turns.giveAll();
    await waiting;
    await turns.take(turns.root);
  });
});
