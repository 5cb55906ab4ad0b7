/**
 * Text other machines chose (a mail server's reply, an error that carries one), made
 * fit for a message: one line, and clipped, since it goes into events, logs, syslog
 * and mail, each copy of it stored.
 */

/** How much of a server's words go into errors (and so events, logs and mail). */
export const MAX_QUOTED = 300;

/** One line: control characters (line breaks among them) become single spaces. */
export function oneLine(text: string): string {
  return text.replace(/[\x00-\x1f\x7f]+/g, ' ');
}

/** Text from a remote server, for a message: one line of printable text, clipped. */
export function quoteRemote(text: string, max = MAX_QUOTED): string {
  const flat = oneLine(text).trim();
  return flat.length > max ? `${flat.slice(0, max)}… (${flat.length - max} more characters)` : flat;
}
