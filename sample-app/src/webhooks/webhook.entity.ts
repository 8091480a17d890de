import { Column, Entity, PrimaryGeneratedColumn } from 'typeorm';

/** A customer's webhook endpoint. Its URL may carry a secret token: it is stored encrypted. */
@Entity('wallet_webhooks')
export class Webhook {
  @PrimaryGeneratedColumn()
  id!: number;

  /** `iv.tag.ciphertext`, base64url (AES-256-GCM). */
  @Column({ type: 'varchar', length: 2048 })
  encryptedUrl!: string;
}
