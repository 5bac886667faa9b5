"""Provisioning through Ansible: playbook runs (runner), their events, inventory, records.

The service layer (`appliance.services.provision`) is the only caller; nothing here checks
permissions or writes audit events.
"""
