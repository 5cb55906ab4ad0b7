// The test project is type-checked by plain tsc, which cannot read single-file components
// (vue-tsc checks them in renderer/tsconfig.json). Here a .vue import is just a component.
declare module '*.vue' {
  import type { DefineComponent } from 'vue';
  const component: DefineComponent<object, object, unknown>;
  export default component;
}
