import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';

/**
 * Custom search attributes of an agent run (contract). Registered on the embedded dev server at
 * start and on an external cluster by `agents setup`; the Web UI and `temporal workflow list
 * --query` filter on them.
 */
export const agentNameKey = defineSearchAttributeKey('AgentName', SearchAttributeType.KEYWORD);
export const agentStateKey = defineSearchAttributeKey('AgentState', SearchAttributeType.KEYWORD);
export const agentIterationKey = defineSearchAttributeKey('AgentIteration', SearchAttributeType.INT);
export const agentTemplateKey = defineSearchAttributeKey('AgentTemplate', SearchAttributeType.KEYWORD);

/** Every custom search attribute with the type name the `temporal` CLI and operator API use. */
export const SEARCH_ATTRIBUTES = [
  { name: agentNameKey.name, type: 'Keyword' },
  { name: agentStateKey.name, type: 'Keyword' },
  { name: agentIterationKey.name, type: 'Int' },
  { name: agentTemplateKey.name, type: 'Keyword' },
] as const;
