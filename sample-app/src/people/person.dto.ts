import { BodyPipe, text } from '../common/validation';

/** `POST /people` body. */
export const addPersonPipe = new BodyPipe({ name: text({ maxLength: 100 }) });
