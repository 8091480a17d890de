import { BodyPipe, integer } from '../common/validation';

/** `POST /transfers` body. Amounts are cents. */
export interface TransferDto {
  from: number;
  to: number;
  amount: number;
}

/** Validates a {@link TransferDto}: 400 with every problem listed, before anything runs. */
export const transferPipe = new BodyPipe(
  {
    from: integer({ min: 1 }),
    to: integer({ min: 1 }),
    amount: integer({ min: 1, max: 100_000_000 }),
  },
  (dto) => (dto.from === dto.to ? `from and to must be different accounts, got ${dto.from} twice` : undefined),
);

/** What a transfer returns. */
export interface TransferReceipt {
  ledgerEntryId: number;
  from: { id: number; balance: number };
  to: { id: number; balance: number };
  amount: number;
}
