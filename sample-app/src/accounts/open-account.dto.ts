import { Transform } from 'class-transformer';
import { IsInt, IsNotEmpty, IsOptional, IsString, Max, MaxLength, Min } from 'class-validator';

/** `POST /accounts` body. Decorators run bottom-up; the first failure of a field is reported. */
export class OpenAccountDto {
  @MaxLength(100)
  @IsNotEmpty()
  @IsString()
  @Transform(({ value }: { value: unknown }) => (typeof value === 'string' ? value.trim() : value))
  owner!: string;

  /** Opening balance in cents. */
  @Max(100_000_000)
  @Min(0)
  @IsInt({ message: 'balance must be a whole number (cents)' })
  @IsOptional()
  balance?: number;
}
