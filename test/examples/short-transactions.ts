import { Body, Controller, Injectable, Logger, Post } from '@nestjs/common';
import { Column, Entity, EntityManager, IsNull, PrimaryGeneratedColumn } from 'typeorm';
import { TransactionHost, TransactionRunner, Tx } from 'nestjs-request-transaction';

@Entity('short_tx_users')
export class User {
  @PrimaryGeneratedColumn()
  id!: number;

  @Column({ type: 'varchar', length: 200, unique: true })
  email!: string;
}

/** A mail to send, written in the same transaction as the change it is about. */
@Entity('short_tx_outbox')
export class OutboxMail {
  @PrimaryGeneratedColumn()
  id!: number;

  @Column({ type: 'varchar', length: 200 })
  recipient!: string;

  @Column({ type: 'varchar', length: 200 })
  subject!: string;

  @Column({ type: 'timestamp', nullable: true })
  sentAt!: Date | null;
}

/** Any mail client: an SMTP transport, a mail provider's HTTP API. */
export abstract class Mailer {
  abstract send(to: string, subject: string): Promise<void>;
}

@Controller('users')
export class RegistrationController {
  private readonly logger = new Logger(RegistrationController.name);

  constructor(
    private readonly mailer: Mailer,
    private readonly host: TransactionHost,
  ) {}

  /** 1. Before the first query: no connection is taken until then. */
  @Post('invited')
  async registerInvited(@Body() body: { email: string }, @Tx() tx: EntityManager): Promise<User> {
    await this.mailer.send(body.email, 'Your invitation was accepted');
    return tx.save(User, { email: body.email });
  }

  /** 2. After the commit: the hook runs once the user is committed and the connection is back in the pool. */
  @Post()
  async register(@Body() body: { email: string }, @Tx() tx: EntityManager): Promise<User> {
    const user = await tx.save(User, { email: body.email });
    this.host.afterCommit(async () => {
      try {
        await this.mailer.send(user.email, 'Welcome');
      } catch (error) {
        this.logger.error(`The welcome mail to user ${user.id} was not sent: ${String(error)}`);
      }
    });
    return user;
  }

  /** 3. An outbox row, written in the transaction: committed with the user, or not at all. */
  @Post('with-outbox')
  async registerWithOutbox(@Body() body: { email: string }, @Tx() tx: EntityManager): Promise<User> {
    const user = await tx.save(User, { email: body.email });
    await tx.insert(OutboxMail, { recipient: user.email, subject: 'Welcome', sentAt: null });
    return user;
  }
}

/** Sends the outbox: call `relay()` from a scheduler or a queue consumer, one relay at a time. */
@Injectable()
export class OutboxRelay {
  constructor(
    private readonly runner: TransactionRunner,
    private readonly mailer: Mailer,
  ) {}

  /** Sends what the outbox holds; returns how many went out. A mail that fails stays for the next call. */
  async relay(batch = 20): Promise<number> {
    // Each unit of work is one short statement: no connection is held while a mail is on its way.
    const pending = await this.runner.run(
      (tx) => tx.find(OutboxMail, { where: { sentAt: IsNull() }, order: { id: 'ASC' }, take: batch }),
      {
        name: 'outbox relay: read',
      },
    );
    let sent = 0;
    for (const mail of pending) {
      try {
        await this.mailer.send(mail.recipient, mail.subject);
      } catch {
        continue;
      }
      await this.runner.run((tx) => tx.update(OutboxMail, mail.id, { sentAt: new Date() }), { name: 'outbox relay: sent' });
      sent += 1;
    }
    return sent;
  }
}
