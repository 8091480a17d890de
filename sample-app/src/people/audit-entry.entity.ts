import { Column, CreateDateColumn, Entity, PrimaryGeneratedColumn } from 'typeorm';

/** What happened to whom: written in the transaction of the change it records. */
@Entity('wallet_audit_log')
export class AuditEntry {
  @PrimaryGeneratedColumn()
  id!: number;

  /** `person.deleted`, … */
  @Column({ type: 'varchar', length: 100 })
  action!: string;

  @Column({ type: 'int' })
  subjectId!: number;

  @CreateDateColumn()
  createdAt!: Date;
}
