/**
 * What is wrong with params the contract refuses, one entry per problem, worded for
 * the caller: the engine's dispatcher and the desktop bridge both answer with these.
 */
import type { z } from 'zod';

export interface ParamIssue {
  /** Dotted path of the field at fault ('' for the params themselves). */
  path: string;
  message: string;
}

export function paramIssues(err: z.ZodError): ParamIssue[] {
  return issuesAt(err.issues, []);
}

function issuesAt(issues: readonly z.core.$ZodIssue[], base: PropertyKey[]): ParamIssue[] {
  return issues.flatMap((i) => {
    const at = [...base, ...i.path];
    if (i.code === 'invalid_union' && i.errors.length > 0) {
      // A value of one option's type (a selector object, say) is wrong inside: that
      // option's own issues say where, not "Invalid input".
      const near = i.errors.filter((option) => !option.every(wrongTypeHere));
      if (near.length === 1) return issuesAt(near[0]!, at);
      if (near.length === 0 && i.errors.every((option) => option.length === 1)) {
        const wanted = i.errors.map((option) => option[0]!.message.replace(/^Invalid input: /, ''));
        return [
          { path: at.map(String).join('.'), message: `Invalid input: ${wanted.join('; or ')}` },
        ];
      }
    }
    // an unknown key is the field at fault, not its parent object
    const keys = i.code === 'unrecognized_keys' ? i.keys : [undefined];
    return keys.map((k) => ({
      path: [...at, ...(k ? [k] : [])].map(String).join('.'),
      message: i.message,
    }));
  });
}

/** The value is not of this option's type (or not its one literal) at all. */
function wrongTypeHere(i: z.core.$ZodIssue): boolean {
  return i.path.length === 0 && (i.code === 'invalid_type' || i.code === 'invalid_value');
}
