import { ApiError } from '../../../contract/errors.js';

/** An error as the UI shows it: what happened, and what the user can do next. */
export interface ErrorSummary {
  message: string;
  hint: string | null;
}

export function describeError(e: unknown): ErrorSummary {
  if (e instanceof ApiError) return { message: e.message, hint: e.data?.hint ?? null };
  const message = e instanceof Error && e.message ? e.message : String(e);
  return { message, hint: null };
}
