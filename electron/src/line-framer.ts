/**
 * Newline-delimited framing for the engine socket: one JSON object per line.
 * Holds the unfinished tail between chunks and refuses to buffer a line without end.
 */

/** Raised when the peer sends a line longer than the limit; the link drops the socket. */
export class LineTooLongError extends Error {
  readonly code = 'ELINETOOLONG';
  constructor(readonly limit: number) {
    super(`the engine sent a message longer than ${limit} characters: dropping the connection`);
    this.name = 'LineTooLongError';
  }
}

export class LineFramer {
  private tail = '';

  /** @param maxLineLength longest accepted line, in UTF-16 code units, newline excluded. */
  constructor(private readonly maxLineLength: number) {}

  /** Feeds one decoded chunk; returns the complete, non-empty lines it finished. */
  push(chunk: string): string[] {
    const lines: string[] = [];
    let start = 0;
    let nl = chunk.indexOf('\n');
    while (nl !== -1) {
      const line = this.tail + chunk.slice(start, nl);
      this.tail = '';
      if (line.length > this.maxLineLength) throw new LineTooLongError(this.maxLineLength);
      if (line.trim() !== '') lines.push(line);
      start = nl + 1;
      nl = chunk.indexOf('\n', start);
    }
    this.tail += chunk.slice(start);
    if (this.tail.length > this.maxLineLength) throw new LineTooLongError(this.maxLineLength);
    return lines;
  }

  /** Forgets a partial line (the connection it came from is gone). */
  reset(): void {
    this.tail = '';
  }
}
