import { AsyncLocalStorage } from 'node:async_hooks';

/**
 * The one async-context store: the unit of work of the running call chain (or the savepoint whose
 * callback runs, or a guard-reported call). One storage for everything: on Node 20 each enabled
 * AsyncLocalStorage adds its own work to every promise the application creates.
 */
export const unitOfWorkStorage = new AsyncLocalStorage<object>();
