import { BadRequestException, Injectable, type PipeTransform } from '@nestjs/common';

/**
 * `?accounts=3,1,2` → `[3, 1, 2]`; absent → `undefined`. Anything else is a 400.
 */
@Injectable()
export class IdListPipe implements PipeTransform<unknown, number[] | undefined> {
  transform(value: unknown): number[] | undefined {
    if (value === undefined) return undefined;
    const ids = typeof value === 'string' ? value.split(',').map((part) => Number(part.trim())) : [];
    if (ids.length === 0 || ids.length > 100 || !ids.every((id) => Number.isSafeInteger(id) && id > 0)) {
      throw new BadRequestException([
        `accounts must be a comma-separated list of 1 to 100 account ids, e.g. ?accounts=1,2; got ${JSON.stringify(value)}`,
      ]);
    }
    return ids;
  }
}
