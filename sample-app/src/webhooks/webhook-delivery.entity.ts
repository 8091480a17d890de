import { Column, CreateDateColumn, Entity, PrimaryGeneratedColumn } from 'typeorm';

/** An event queued for delivery to a webhook. */
@Entity('wallet_webhook_deliveries')
export class WebhookDelivery {
  @PrimaryGeneratedColumn()
  id!: number;

  @Column({ type: 'int' })
  webhookId!: number;

  @Column({ type: 'varchar', length: 100 })
  event!: string;

  @CreateDateColumn()
  createdAt!: Date;
}
