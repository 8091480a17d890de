import { type DynamicModule, Module } from '@nestjs/common';
import type { Variant } from '../common/variant';
import { NaiveTransfersService } from './naive-transfers.service';
import { NaiveTransfersController } from './naive-transfers.controller';
import { TransfersController } from './transfers.controller';
import { TransfersService } from './transfers.service';

@Module({
  providers: [TransfersService, NaiveTransfersService],
})
export class TransfersModule {
  /** `POST /transfers`, served by the variant's controller. */
  static forVariant(variant: Variant): DynamicModule {
    return { module: TransfersModule, controllers: [variant === 'naive' ? NaiveTransfersController : TransfersController] };
  }
}
