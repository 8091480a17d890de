import { ConfigurableModuleBuilder } from '@nestjs/common';
import { DEFAULT_DATA_SOURCE } from './core/data-source-registry';
import type { TransactionalModuleExtras, TransactionalModuleOptions } from './transactional.options';

export const { ConfigurableModuleClass, MODULE_OPTIONS_TOKEN, OPTIONS_TYPE, ASYNC_OPTIONS_TYPE } =
  new ConfigurableModuleBuilder<TransactionalModuleOptions>({ moduleName: 'Transactional' })
    .setClassMethodName('forRoot')
    .setExtras<TransactionalModuleExtras>({ dataSource: DEFAULT_DATA_SOURCE, mount: true })
    .build();
