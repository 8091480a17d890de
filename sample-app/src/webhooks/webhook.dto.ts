import { Transform } from 'class-transformer';
import { IsString, IsUrl, Matches, MaxLength } from 'class-validator';

const trim = ({ value }: { value: unknown }) => (typeof value === 'string' ? value.trim() : value);

// Validation decorators run bottom-up and the first failure of a field is reported: the type check first.

/** `POST /webhooks` body. */
export class CreateWebhookDto {
  @IsUrl(
    { protocols: ['http', 'https'], require_protocol: true, require_tld: false },
    { message: 'url must be an http:// or https:// URL' },
  )
  @MaxLength(1000)
  @IsString()
  @Transform(trim)
  url!: string;
}

/** `POST /webhooks/:id/deliveries` body. */
export class DeliveryDto {
  @Matches(/^[a-z][a-z0-9_.-]*$/, { message: 'event must be an event name like transfer.created' })
  @MaxLength(100)
  @IsString()
  @Transform(trim)
  event!: string;
}

/** What a delivery returns: the event, queued, and where it goes. */
export interface DeliveryReceipt {
  deliveryId: number;
  webhookId: number;
  event: string;
  url: string;
}
