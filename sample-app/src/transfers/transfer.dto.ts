import {
  IsInt,
  Max,
  Min,
  Validate,
  ValidatorConstraint,
  type ValidationArguments,
  type ValidatorConstraintInterface,
} from 'class-validator';

/** `from` and `to` name two different accounts. */
@ValidatorConstraint({ name: 'differentAccounts' })
class DifferentAccounts implements ValidatorConstraintInterface {
  validate(to: unknown, { object }: ValidationArguments): boolean {
    return to !== (object as TransferDto).from;
  }

  defaultMessage({ value }: ValidationArguments): string {
    return `from and to must be different accounts, got ${String(value)} twice`;
  }
}

/**
 * `POST /transfers` body. Amounts are cents. The global ValidationPipe answers 400 before anything
 * runs, with the first problem of each field: the decorators run bottom-up, the type check first.
 */
export class TransferDto {
  @Min(1)
  @IsInt({ message: 'from must be a whole number' })
  from!: number;

  @Validate(DifferentAccounts)
  @Min(1)
  @IsInt({ message: 'to must be a whole number' })
  to!: number;

  @Max(100_000_000)
  @Min(1)
  @IsInt({ message: 'amount must be a whole number (cents)' })
  amount!: number;
}

/** What a transfer returns. */
export interface TransferReceipt {
  ledgerEntryId: number;
  from: { id: number; balance: number };
  to: { id: number; balance: number };
  amount: number;
}
