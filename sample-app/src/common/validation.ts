import { BadRequestException, Injectable, type PipeTransform } from '@nestjs/common';

/**
 * Reads one field of a request body. Returns the value, or records what is wrong with it in `errors`
 * (and returns anything: the pipe throws before the handler sees it).
 */
export type FieldRule<T> = (value: unknown, name: string, errors: string[]) => T;

/** The fields of a body and their rules. */
export type BodyShape = Record<string, FieldRule<unknown>>;

/** The value a {@link BodyShape} validates to. */
export type BodyOf<S extends BodyShape> = { [K in keyof S]: ReturnType<S[K]> };

/** A whole number in `[min, max]`, given as a JSON number (not a string). */
export function integer({ min = Number.MIN_SAFE_INTEGER, max = Number.MAX_SAFE_INTEGER } = {}): FieldRule<number> {
  return (value, name, errors) => {
    if (typeof value !== 'number' || !Number.isSafeInteger(value)) {
      errors.push(`${name} must be a whole number, got ${JSON.stringify(value) ?? 'nothing'}`);
    } else if (value < min || value > max) {
      errors.push(`${name} must be between ${min} and ${max}, got ${value}`);
    }
    return value as number;
  };
}

/** A string of 1 to `maxLength` characters, trimmed, matching `pattern` when given. */
export function text({ maxLength, pattern, hint }: { maxLength: number; pattern?: RegExp; hint?: string }): FieldRule<string> {
  return (value, name, errors) => {
    const trimmed = typeof value === 'string' ? value.trim() : undefined;
    if (trimmed === undefined || trimmed === '') {
      errors.push(`${name} must be a non-empty string, got ${JSON.stringify(value) ?? 'nothing'}`);
    } else if (trimmed.length > maxLength) {
      errors.push(`${name} must be at most ${maxLength} characters long`);
    } else if (pattern !== undefined && !pattern.test(trimmed)) {
      errors.push(`${name} must be ${hint ?? `like ${pattern}`}`);
    }
    return trimmed as string;
  };
}

/** The field may be absent; when present, `rule` applies. */
export function optional<T>(rule: FieldRule<T>): FieldRule<T | undefined> {
  return (value, name, errors) => (value === undefined ? undefined : rule(value, name, errors));
}

/**
 * Validates a JSON body against a shape: every field known, every rule met, then `check` across
 * fields. Anything wrong is a 400 listing all the problems, before the handler runs, so nothing is
 * written (and, the transaction being lazy, no connection is even taken).
 * @example
 * @Post() create(@Body(new BodyPipe({ owner: text({ maxLength: 100 }) })) dto: { owner: string }) { … }
 */
@Injectable()
export class BodyPipe<S extends BodyShape> implements PipeTransform<unknown, BodyOf<S>> {
  constructor(
    private readonly shape: S,
    private readonly check?: (body: BodyOf<S>) => string | undefined,
  ) {}

  transform(body: unknown): BodyOf<S> {
    if (typeof body !== 'object' || body === null || Array.isArray(body)) {
      throw new BadRequestException(['the body must be a JSON object (Content-Type: application/json)']);
    }
    const errors: string[] = [];
    for (const key of Object.keys(body)) {
      if (!(key in this.shape)) errors.push(`${key} is not a known field (known: ${Object.keys(this.shape).join(', ')})`);
    }
    const parsed: Record<string, unknown> = {};
    for (const [key, rule] of Object.entries(this.shape)) {
      parsed[key] = rule((body as Record<string, unknown>)[key], key, errors);
    }
    if (errors.length === 0 && this.check !== undefined) {
      const problem = this.check(parsed as BodyOf<S>);
      if (problem !== undefined) errors.push(problem);
    }
    if (errors.length > 0) throw new BadRequestException(errors);
    return parsed as BodyOf<S>;
  }
}

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
