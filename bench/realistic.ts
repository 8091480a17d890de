/**
 * The realistic app: the routes of `handwritten` and of `module-throw` in an app set up as most apps
 * are, with a global `ValidationPipe` (a class-validator DTO on the write route), a global
 * `ClassSerializerInterceptor` and a global auth guard (a header check). Variants `hand-realistic` and
 * `module-realistic`: what the module costs where Nest's own request pipeline already does work.
 */
import {
  Body,
  type CanActivate,
  ClassSerializerInterceptor,
  Controller,
  type ExecutionContext,
  Get,
  HttpCode,
  Injectable,
  Post,
  type Provider,
  Query,
  type Type,
  UnauthorizedException,
  ValidationPipe,
} from '@nestjs/common';
import { APP_GUARD, APP_INTERCEPTOR, APP_PIPE } from '@nestjs/core';
import { IsInt, IsPositive, Max, Min } from 'class-validator';
import { DataSource, type EntityManager } from 'typeorm';
import { loadLibrary } from './library';
import { balances, reposOf, transfer } from './units';
import { AUTHORIZATION } from './workloads';

/** The write route's body, validated (and turned into this class) by the global ValidationPipe. */
export class TransferBody {
  @IsInt()
  @Min(1)
  from!: number;

  @IsInt()
  @Min(1)
  to!: number;

  @IsInt()
  @IsPositive()
  @Max(1_000_000)
  amount!: number;
}

/** The auth guard: a request without the bench's bearer token is refused (401). */
@Injectable()
class HeaderAuthGuard implements CanActivate {
  canActivate(context: ExecutionContext): boolean {
    const request = context.switchToHttp().getRequest<{ headers: Record<string, string | string[] | undefined> }>();
    if (request.headers.authorization !== AUTHORIZATION) throw new UnauthorizedException('missing or wrong bearer token');
    return true;
  }
}

/** The app-wide pipe, interceptor and guard of the realistic app, as its root module provides them. */
export const realisticProviders: Provider[] = [
  { provide: APP_PIPE, useValue: new ValidationPipe({ whitelist: true, forbidNonWhitelisted: true, transform: true }) },
  { provide: APP_INTERCEPTOR, useClass: ClassSerializerInterceptor },
  { provide: APP_GUARD, useClass: HeaderAuthGuard },
];

/** `handwritten`'s routes in the realistic app: a QueryRunner per request, in the handler. */
export function handRealisticController(
  inQueryRunner: <T>(dataSource: DataSource, fn: (manager: EntityManager) => Promise<T>) => Promise<T>,
): Type {
  @Controller()
  class HandRealisticController {
    constructor(private readonly dataSource: DataSource) {}

    @Post('transfer')
    @HttpCode(200)
    transfer(@Body() dto: TransferBody): Promise<{ id: number }> {
      return inQueryRunner(this.dataSource, (manager) => transfer(reposOf(manager), dto));
    }

    @Get('balances')
    balances(@Query('from') from: string, @Query('to') to: string): Promise<unknown> {
      return inQueryRunner(this.dataSource, (manager) => balances(reposOf(manager), from, to));
    }

    @Get('ping')
    ping(): { ok: boolean } {
      return { ok: true };
    }
  }
  return HandRealisticController;
}

/** `module-throw`'s routes in the realistic app: the request transaction's manager from `@Tx()`. */
export function moduleRealisticController(): Type {
  const { Tx } = loadLibrary();

  @Controller()
  class ModuleRealisticController {
    @Post('transfer')
    @HttpCode(200)
    transfer(@Body() dto: TransferBody, @Tx() tx: EntityManager): Promise<{ id: number }> {
      return transfer(reposOf(tx), dto);
    }

    @Get('balances')
    balances(@Query('from') from: string, @Query('to') to: string, @Tx() tx: EntityManager): Promise<unknown> {
      return balances(reposOf(tx), from, to);
    }

    @Get('ping')
    ping(): { ok: boolean } {
      return { ok: true };
    }
  }
  return ModuleRealisticController;
}
