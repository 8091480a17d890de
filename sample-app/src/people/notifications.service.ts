import { Injectable, Logger } from '@nestjs/common';

/**
 * Stands in for e-mail, push or a message queue: work that is not the database's and must happen only
 * once the change it announces is committed. Keeps the last 100 messages (for the tests and the curious).
 */
@Injectable()
export class NotificationsService {
  private readonly logger = new Logger(NotificationsService.name);
  private readonly recent: string[] = [];

  async send(message: string): Promise<void> {
    this.recent.push(message);
    if (this.recent.length > 100) this.recent.shift();
    this.logger.log(message);
  }

  sent(): readonly string[] {
    return [...this.recent];
  }
}
