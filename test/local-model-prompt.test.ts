import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { TranscriptMessage } from '../common/agent-run-types';
import { answerSchema, chatHistory, parseAnswer, transcriptPrompt } from '../models/local-model-prompt';
import type { ToolDefinition } from '../models/model-provider';

const writeFile: ToolDefinition = {
  name: 'write_file',
  description: 'Write a file.',
  parameters: {
    type: 'object',
    properties: { path: { type: 'string' }, content: { type: 'string' }, mode: { type: 'string' } },
    required: ['path', 'content'],
  },
};
const tmux: ToolDefinition = {
  name: 'tmux',
  description: 'Terminals.',
  parameters: {
    type: 'object',
    properties: { action: { type: 'string', enum: ['start', 'stop'] } },
    required: ['action'],
  },
};
const nested: ToolDefinition = {
  name: 'query',
  description: 'Takes an object.',
  parameters: { type: 'object', properties: { filter: { type: 'object' } }, required: ['filter'] },
};

const conversation: TranscriptMessage[] = [
  { role: 'user', content: 'Begin the program.' },
  {
    role: 'assistant',
    content: 'I write 1.',
    toolCalls: [{ id: 'call_0_0', tool: 'write_file', arguments: { path: 'a.txt', content: '1' } }],
  },
  {
    role: 'tool',
    toolCallId: 'call_0_0',
    tool: 'write_file',
    content: 'Wrote 1 bytes to a.txt',
    success: true,
  },
];

describe('local model prompts', () => {
  it('holds answers to text and the calls of tools whose required arguments are plain values', () => {
    assert.deepEqual(answerSchema([writeFile, tmux, nested]), {
      type: 'object',
      properties: {
        text: { type: 'string', maxLength: 600 },
        tool_calls: {
          type: 'array',
          maxItems: 4,
          items: {
            oneOf: [
              {
                type: 'object',
                properties: {
                  name: { const: 'write_file' },
                  arguments: {
                    type: 'object',
                    properties: {
                      path: { type: 'string' },
                      content: { type: 'string' },
                    },
                  },
                },
              },
              {
                type: 'object',
                properties: {
                  name: { const: 'tmux' },
                  arguments: { type: 'object', properties: { action: { enum: ['start', 'stop'] } } },
                },
              },
            ],
          },
        },
      },
    });
  });

  it('offers no tool_calls field when no tool can be offered', () => {
    assert.deepEqual(answerSchema([nested]), {
      type: 'object',
      properties: { text: { type: 'string', maxLength: 600 } },
    });
  });

  it('writes a base model a transcript ending in "You:", earlier answers in its own JSON', () => {
    const prompt = transcriptPrompt('SYSTEM', [writeFile], conversation);
    assert.ok(prompt.startsWith('SYSTEM\n\n=== HOW TO ANSWER ==='));
    assert.match(prompt, /- write_file\(path, content\): Write a file\./);
    assert.ok(
      prompt.endsWith(
        [
          '=== CONVERSATION ===',
          'User: Begin the program.',
          'You: {"text":"I write 1.","tool_calls":[{"name":"write_file","arguments":{"path":"a.txt","content":"1"}}]}',
          'User: Tool write_file returned: Wrote 1 bytes to a.txt',
          'If the iteration is done, answer with "tool_calls": [] and your summary in "text".',
          'You:',
        ].join('\n'),
      ),
      prompt,
    );
  });

  it('gives a chat model the same turns as chat items, the results of one answer in one user turn', () => {
    const history = chatHistory(
      'SYSTEM',
      [writeFile],
      [
        ...conversation,
        { role: 'tool', toolCallId: 'call_0_1', tool: 'bash', content: 'boom', success: false },
      ],
    );
    assert.equal(history.length, 4);
    assert.equal(history[0]?.type, 'system');
    assert.deepEqual(history[3], {
      type: 'user',
      text: [
        'Tool write_file returned: Wrote 1 bytes to a.txt',
        'Tool bash failed: boom',
        'If the iteration is done, answer with "tool_calls": [] and your summary in "text".',
      ].join('\n'),
    });
  });

  it('reads an answer into text and tool calls with IDs of the model call', () => {
    const answer = parseAnswer(
      '{"text": "Writing.", "tool_calls": [{"name": "write_file", "arguments": {"path": "a", "content": "b"}}, {"name": "finish", "arguments": {}}]}',
      'call_7',
    );
    assert.deepEqual(answer, {
      text: 'Writing.',
      toolCalls: [
        { id: 'call_7_0', tool: 'write_file', arguments: { path: 'a', content: 'b' } },
        { id: 'call_7_1', tool: 'finish', arguments: {} },
      ],
    });
  });

  it('keeps an answer cut off by the token limit as text, so the run goes on', () => {
    assert.deepEqual(parseAnswer('{"text": "I was about to', 'call_0'), {
      text: '{"text": "I was about to',
      toolCalls: [],
    });
  });
});
