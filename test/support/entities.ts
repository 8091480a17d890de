/**
 * Every entity the test suites use (the documentation's examples keep theirs: they are the user's code).
 * Suites share these tables one after another (Jest runs them in band): each suite empties the tables it
 * uses before its tests (see `suite.ts`), and a table means the same thing in every suite. A suite that
 * needs a constraint its entity does not declare adds it after the app's `synchronize` and drops it after.
 */
import { Expose } from 'class-transformer';
import {
  Column,
  Entity,
  getMetadataArgsStorage,
  JoinColumn,
  ManyToOne,
  OneToMany,
  PrimaryColumn,
  PrimaryGeneratedColumn,
  RelationId,
} from 'typeorm';

/** A row with a label: what most suites write and read back. */
@Entity('items')
export class Item {
  @PrimaryGeneratedColumn()
  id!: number;

  @Column({ type: 'varchar', length: 100 })
  label!: string;
}

/** A second table of labels, for suites that write two (an order and its audit, two data sources). */
@Entity('audit_entries')
export class AuditEntry {
  @PrimaryGeneratedColumn()
  id!: number;

  @Column({ type: 'varchar', length: 100 })
  label!: string;
}

/** A labelled row whose id the test chooses, to fail a write on a duplicate key. */
@Entity('numbered_items')
export class NumberedItem {
  @PrimaryColumn({ type: 'int' })
  id!: number;

  @Column({ type: 'varchar', length: 100 })
  label!: string;
}

/** An account whose id the test chooses: rows to lock, move money between and count on. */
@Entity('accounts')
export class Account {
  @PrimaryColumn({ type: 'int' })
  id!: number;

  @Column({ type: 'int' })
  balance!: number;
}

/** Two accounts locked together, in the order a unit of work names them. */
@Entity('account_pairs')
export class AccountPair {
  @PrimaryColumn({ type: 'int' })
  left!: number;

  @PrimaryColumn({ type: 'int' })
  right!: number;
}

/** A transfer between accounts, once per request id (a retried request finds it taken). */
@Entity('transfers')
export class Transfer {
  @PrimaryGeneratedColumn()
  id!: number;

  @Column({ type: 'varchar', length: 40, unique: true })
  requestId!: string;

  @Column({ type: 'int' })
  fromId!: number;

  @Column({ type: 'int' })
  toId!: number;

  @Column({ type: 'int' })
  amount!: number;
}

/** The owner of {@link OwnedItem}s. */
@Entity('owners')
export class Owner {
  @PrimaryGeneratedColumn()
  id!: number;

  @Column({ type: 'varchar', length: 100 })
  name!: string;
}

/** An item with a lazy owner: TypeORM loads it on its own, through the query runner that loaded the item. */
@Entity('owned_items')
export class OwnedItem {
  @PrimaryGeneratedColumn()
  id!: number;

  @Column({ type: 'varchar', length: 100 })
  label!: string;

  /** Exposed: a serializer that reads it makes TypeORM load it. */
  @Expose()
  @ManyToOne(() => Owner, { lazy: true, nullable: true })
  owner!: Promise<Owner | null>;
}

/** An order, saved with its lines by cascade. */
@Entity('orders')
export class Order {
  @PrimaryGeneratedColumn()
  id!: number;

  @Column({ type: 'varchar', length: 100 })
  label!: string;

  @OneToMany(() => OrderLine, (line) => line.order, { cascade: true })
  lines!: OrderLine[];
}

/** A line of an {@link Order}. Its label is unique: a line whose label is taken fails in the database. */
@Entity('order_lines')
export class OrderLine {
  @PrimaryGeneratedColumn()
  id!: number;

  @Column({ type: 'varchar', length: 100, unique: true })
  label!: string;

  /**
   * Lazy: loading it later runs a query TypeORM issues on its own. Set it to `Promise.resolve(order)`; TypeORM
   * ignores a plain `{ id }` given for a lazy relation (and a column property beside it breaks cascade saves).
   */
  @ManyToOne(() => Order, (order) => order.lines, { lazy: true, onDelete: 'CASCADE' })
  @JoinColumn({ name: 'orderId' })
  order!: Promise<Order>;

  /** The order's id, read with the line (never written through this property). */
  @RelationId((line: OrderLine) => line.order)
  readonly orderId?: number;
}

/** A marker a request writes in its batch, then reads back with every marker of the batch it can see. */
@Entity('markers')
export class Marker {
  @PrimaryGeneratedColumn()
  id!: number;

  @Column({ type: 'varchar', length: 100 })
  batch!: string;

  @Column({ type: 'varchar', length: 100 })
  marker!: string;
}

/** An article: the entity of a service written before the module, converted step by step. */
@Entity('articles')
export class Article {
  @PrimaryGeneratedColumn()
  id!: number;

  @Column({ type: 'varchar', length: 100 })
  title!: string;

  @Column({ type: 'varchar', length: 100 })
  author!: string;
}

/** The steps of a unit of work that reached the database, by the unit's label. */
@Entity('step_records')
export class StepRecord {
  @PrimaryGeneratedColumn()
  id!: number;

  @Column({ type: 'varchar', length: 100 })
  label!: string;

  @Column({ type: 'varchar', length: 40 })
  step!: string;
}

/** The rows of the guard's bug zoo (`bug-zoo.ts`): each bug writes some, of its kind. */
@Entity('zoo_items')
export class ZooItem {
  @PrimaryGeneratedColumn()
  id!: number;

  @Column({ type: 'varchar', length: 100 })
  label!: string;

  @Column({ type: 'varchar', length: 40 })
  kind!: string;

  @Column({ type: 'varchar', length: 40, nullable: true })
  note!: string | null;
}

/** The rows the model's programs insert: id `n` for step `#n`; row 0 is committed beforehand, for duplicate keys. */
@Entity('model_rows')
export class ModelRow {
  @PrimaryColumn({ type: 'int' })
  id!: number;
}

/** Rows the model's units of work lock (`SELECT … FOR UPDATE`) to deadlock. */
@Entity('model_locks')
export class ModelLock {
  @PrimaryColumn({ type: 'int' })
  id!: number;
}

/** Rows a deadlock partner inserts on MariaDB to weigh more than the unit, so InnoDB picks the unit as victim. */
@Entity('model_ballast')
export class ModelBallast {
  @PrimaryGeneratedColumn()
  id!: number;

  @Column({ type: 'int' })
  n!: number;
}

/** The table of `entity`, as its `@Entity()` names it. */
export function tableOf(entity: abstract new (...args: never[]) => unknown): string {
  const table = getMetadataArgsStorage().tables.find((args) => args.target === entity);
  if (typeof table?.name !== 'string') throw new Error(`${entity.name} names no table in its @Entity()`);
  return table.name;
}
