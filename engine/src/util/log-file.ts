/**
 * The engine's log lines also go to DATA/logs/engine.log, rotated by size
 * (engine.log → engine.log.1 → … → engine.log.N, the oldest deleted), so a
 * diagnostics bundle has the history even where no journal keeps stdout.
 *
 * Lines are written synchronously: the last lines before a crash are the ones a
 * diagnosis needs, and the log carries tens of lines a minute, not one per I/O, so
 * it never touches the data path.
 */
import fs from 'node:fs';
import path from 'node:path';
import { addLogSink, type LogSink } from './log.js';
import { makeDirs } from './paths.js';

export interface LogFileOptions {
  /** Rotate when the current file would pass this size (default 10 MiB). */
  maxBytes?: number;
  /** Rotated files kept besides the current one (default 5). */
  keep?: number;
}

export const LOG_FILE = 'engine.log';

export function logDir(dataDir: string): string {
  return path.join(dataDir, 'logs');
}

export class RotatingLogFile implements LogSink {
  private fd: number | null = null;
  private size = 0;
  private readonly file: string;
  private readonly maxBytes: number;
  private readonly keep: number;

  constructor(
    readonly dir: string,
    opts: LogFileOptions = {},
  ) {
    this.file = path.join(dir, LOG_FILE);
    this.maxBytes = opts.maxBytes ?? 10 << 20;
    this.keep = opts.keep ?? 5;
    makeDirs(dir, 0o750);
    this.open();
  }

  write(line: string): void {
    if (this.fd === null) return;
    const bytes = Buffer.byteLength(line);
    try {
      if (this.size > 0 && this.size + bytes > this.maxBytes) this.rotate();
      if (this.fd === null) return;
      fs.writeSync(this.fd, line);
      this.size += bytes;
    } catch {
      // a full or failing disk must not take the engine down through its log; stdout still has it
    }
  }

  close(): void {
    if (this.fd !== null) fs.closeSync(this.fd);
    this.fd = null;
  }

  private open(): void {
    this.fd = fs.openSync(this.file, 'a', 0o640);
    this.size = fs.fstatSync(this.fd).size;
  }

  private rotate(): void {
    this.close();
    fs.rmSync(`${this.file}.${this.keep}`, { force: true });
    for (let i = this.keep - 1; i >= 1; i--) {
      if (fs.existsSync(`${this.file}.${i}`))
        fs.renameSync(`${this.file}.${i}`, `${this.file}.${i + 1}`);
    }
    if (this.keep > 0) fs.renameSync(this.file, `${this.file}.1`);
    else fs.rmSync(this.file, { force: true });
    this.open();
  }
}

/** Starts copying every logger's lines to DATA/logs/engine.log; returns the stop function. */
export function attachLogFile(dataDir: string, opts: LogFileOptions = {}): () => void {
  const sink = new RotatingLogFile(logDir(dataDir), opts);
  const detach = addLogSink(sink);
  return () => {
    detach();
    sink.close();
  };
}
