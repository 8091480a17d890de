import { Column, CreateDateColumn, Entity, PrimaryGeneratedColumn } from 'typeorm';

/** One movement of money between two accounts: written in the same transaction as the debit and the credit. */
@Entity('wallet_ledger_entries')
export class LedgerEntry {
  @PrimaryGeneratedColumn()
  id!: number;

  @Column({ type: 'int' })
  fromAccountId!: number;

  @Column({ type: 'int' })
  toAccountId!: number;

  /** Cents, above 0. */
  @Column({ type: 'int' })
  amount!: number;

  @CreateDateColumn()
  createdAt!: Date;
}
