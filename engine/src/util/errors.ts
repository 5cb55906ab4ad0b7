/**
 * A failure a person can act on: what happened, and what to do next.
 * The CLI prints these without a stack trace; the API maps them to error codes.
 */
export class UserError extends Error {
  constructor(
    message: string,
    readonly hint?: string,
    readonly code: string = 'user-error',
    readonly field?: string,
  ) {
    super(message);
    this.name = 'UserError';
  }
}
