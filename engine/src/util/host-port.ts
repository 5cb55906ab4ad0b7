/** Host names and addresses as URLs and host:port pairs write them. */

/** A host as a URL writes it: an IPv6 address in brackets ([fd00::1]). */
export function urlHost(host: string): string {
  return host.includes(':') ? `[${host}]` : host;
}

/** host:port, with an IPv6 address in brackets ([fd00::1]:4420). */
export function joinHostPort(host: string, port: number | string): string {
  return `${urlHost(host)}:${port}`;
}
