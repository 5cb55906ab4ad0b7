/**
 * Structured logging: one JSON object per line on stdout (journald and tests read it).
 * A logger carries fixed fields (component) and adds per-line fields.
 */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
const ORDER: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  child(fields: Record<string, unknown>): Logger;
}

export interface LogSink {
  write(line: string): void;
  /**
   * false once the sink takes no more lines: a stdout whose reader went away (EPIPE),
   * which the CLI leaves destroyed. Lines then go to the other sinks (the log file).
   */
  readonly writable?: boolean;
}

const extraSinks = new Set<LogSink>();

let stdoutDropped = false;

/**
 * Loggers stop writing to stdout (the CLI calls this once stdout has failed). Needed
 * for a file: Node destroys a pipe whose reader went away, but stdout on a file (a
 * full disk) stays writable, and every later line would fail again.
 */
export function dropStdout(): void {
  stdoutDropped = true;
}

/** process.stdout, until dropStdout(). */
const stdoutSink: LogSink = {
  write: (line) => void process.stdout.write(line),
  get writable() {
    return !stdoutDropped && process.stdout.writable;
  },
};

/** Adds a sink every logger writes to as well (the engine's log file); returns its removal. */
export function addLogSink(sink: LogSink): () => void {
  extraSinks.add(sink);
  return () => extraSinks.delete(sink);
}

export function createLogger(
  opts: { level?: LogLevel; sink?: LogSink; fields?: Record<string, unknown> } = {},
): Logger {
  const min = ORDER[opts.level ?? 'info'];
  const sink = opts.sink ?? stdoutSink;
  const base = opts.fields ?? {};
  const emit = (level: LogLevel, msg: string, fields?: Record<string, unknown>) => {
    if (ORDER[level] < min) return;
    const rec = { ts: new Date().toISOString(), level, msg, ...base, ...fields };
    const line = JSON.stringify(rec, errorReplacer) + '\n';
    if (sink.writable !== false) sink.write(line);
    for (const extra of extraSinks) extra.write(line);
  };
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    child: (fields) => createLogger({ ...opts, fields: { ...base, ...fields } }),
  };
}

function errorReplacer(_key: string, value: unknown): unknown {
  if (value instanceof Error)
    return {
      name: value.name,
      message: value.message,
      code: (value as NodeJS.ErrnoException).code,
    };
  if (typeof value === 'bigint') return value.toString();
  return value;
}

export function isLogLevel(v: string): v is LogLevel {
  return v in ORDER;
}
