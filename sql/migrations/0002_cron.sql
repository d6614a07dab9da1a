-- Reserved for issue 3 (cron schedules); filled in by that change.
SELECT 1;
