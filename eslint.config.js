// Lint and the machine-checked layering of ARCHITECTURE.md.
// Each runtime may import only what its layer allows; test/lint/layering.test.ts proves
// that a wrong import fails.
import tseslint from 'typescript-eslint';
import pluginVue from 'eslint-plugin-vue';
import vueParser from 'vue-eslint-parser';
import globals from 'globals';

const RULE = '@typescript-eslint/no-restricted-imports';

/** Builds the restricted-import rule from [regex, message] pairs. */
function forbid(entries, extra = []) {
  return {
    [RULE]: [
      'error',
      {
        patterns: [...entries.map(([regex, message]) => ({ regex, message })), ...extra],
      },
    ],
  };
}

const NOT_ELECTRON = [
  '^electron$|(^|/)electron/',
  'engine code never imports Electron or the shell',
];
const NOT_RENDERER = [
  '(^|/)renderer/|^(vue|pinia|vue-router)$',
  'engine code never imports the renderer',
];
const engineUpper = (layer) => [
  `(^|/)(${layer})/`,
  'this layer sits below the one it imports (see ARCHITECTURE.md, engine layers)',
];

// Engine layers: what each layer must NOT import (dependency runs downward only).
const engineLayers = {
  protocol: 'service|control|transport|core|mirror|storage|persistence|host|cli',
  storage: 'service|control|transport|core|mirror|persistence|host|cli|protocol',
  persistence: 'service|control|transport|core|mirror|storage|host|cli|protocol',
  core: 'service|control|transport|mirror|persistence|host|cli',
  transport: 'service|control|mirror|persistence|host|cli|storage',
  mirror: 'service|control|transport|core|host|cli',
  host: 'service|control|core|mirror|persistence|cli|storage',
  control: 'service|transport|cli',
  // metrics and events read core counters and persist through persistence
  metrics: 'service|control|transport|mirror|host|cli|storage',
  events: 'service|control|transport|core|mirror|storage|host|cli|protocol',
};

export default tseslint.config(
  {
    ignores: ['dist/**', 'node_modules/**', 'test-results/**', 'bench-results/**', 'coverage/**'],
  },
  ...tseslint.configs.recommended,
  ...pluginVue.configs['flat/recommended'],
  {
    files: ['**/*.vue'],
    languageOptions: { parser: vueParser, parserOptions: { parser: tseslint.parser } },
  },
  {
    rules: {
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_' },
      ],
      'vue/multi-word-component-names': 'off',
      'vue/max-attributes-per-line': 'off',
      'vue/singleline-html-element-content-newline': 'off',
      'vue/html-self-closing': 'off',
      'vue/html-indent': 'off',
      'vue/html-closing-bracket-newline': 'off',
      'vue/multiline-html-element-content-newline': 'off',
    },
  },
  {
    files: ['engine/**/*.ts', 'bin/**/*.js', 'scripts/**/*.js', 'eslint.config.js'],
    languageOptions: { globals: globals.node },
  },
  {
    files: ['engine/**/*.ts', 'contract/**/*.ts'],
    rules: forbid([NOT_ELECTRON, NOT_RENDERER]),
  },
  ...Object.entries(engineLayers).map(([layer, banned]) => ({
    files: [`engine/src/${layer}/**/*.ts`],
    rules: forbid([NOT_ELECTRON, NOT_RENDERER, engineUpper(banned)]),
  })),
  {
    // The core never names a concrete backend: only the storage interface.
    files: ['engine/src/core/**/*.ts'],
    rules: forbid([
      NOT_ELECTRON,
      NOT_RENDERER,
      engineUpper(engineLayers.core),
      [
        '(^|/)storage/(?!backend\\.js$)',
        'the core sees only storage/backend.js, never a concrete backend',
      ],
    ]),
  },
  {
    files: ['renderer/**/*.ts', 'renderer/**/*.vue'],
    languageOptions: { globals: globals.browser },
    rules: forbid(
      [
        [
          '^node:|^(fs|path|os|net|child_process|crypto|better-sqlite3|ws)$',
          'the renderer has no Node',
        ],
        [
          '^electron$|(^|/)electron/',
          'the renderer reaches Electron only through the preload bridge',
        ],
      ],
      [
        {
          regex: '(^|/)engine/',
          allowTypeImports: true,
          message: 'the renderer imports only types from the engine; use the API client',
        },
      ],
    ),
  },
  {
    files: ['electron/**/*.ts'],
    languageOptions: { globals: globals.node },
    rules: forbid([
      ['(^|/)engine/', 'Electron main is a client of the engine: use the socket, not its code'],
      ['(^|/)renderer/|^(vue|pinia)$', 'main and preload never import the renderer'],
    ]),
  },
  {
    files: ['test/**/*.ts'],
    languageOptions: { globals: { ...globals.node, ...globals.browser } },
    // tests poke at untyped wire answers on purpose
    rules: { '@typescript-eslint/no-explicit-any': 'off' },
  },
);
