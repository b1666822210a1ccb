// The activity of bench/devserver.ts's `basic` workflow.
export async function greet(name: string): Promise<string> {
  return `Hello, ${name}!`;
}
