<#
.SYNOPSIS
    Give the SubmitWatch account the least access it needs on one Exchange server.

.DESCRIPTION
    SubmitWatch reads the Application event log with wevtutil through a WinRM (WinRS) cmd
    shell. That needs three things and nothing more (no administrator rights, no Exchange role):

      1. membership of Event Log Readers (S-1-5-32-573): read access to the Application log;
      2. membership of Remote Management Users (S-1-5-32-580): may connect to WinRM;
      3. Read and Execute for Remote Management Users in WinRM's RootSDDL, the security
         descriptor of the cmd shell pywinrm uses. Its default allows only Administrators and
         Interactive Users, so without this step the account signs in and is then refused
         ("Access is denied", WS-Management fault 5; pywinrm issues 336 and 362).

    Run it in an elevated Windows PowerShell on the server. It is idempotent: what is in place
    already is left as it is. It prints RootSDDL before and after. With -WhatIf it changes
    nothing and says what it would do.

    Docs: docs/windows-setup.md in the SubmitWatch repository.

.PARAMETER Account
    The account SubmitWatch signs in as, for example CONTOSO\svc-submitwatch.

.EXAMPLE
    .\Grant-SubmitWatchAccess.ps1 -Account 'CONTOSO\svc-submitwatch' -WhatIf
#>
[CmdletBinding(SupportsShouldProcess = $true)]
param(
    [Parameter(Mandatory = $true)]
    [string] $Account
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

# Well-known SIDs: the same on every Windows language, unlike the group names.
$EventLogReaders = 'S-1-5-32-573'
$RemoteManagementUsers = 'S-1-5-32-580'
# GENERIC_READ (0x80000000) | GENERIC_EXECUTE (0x20000000), as the signed 32-bit mask .NET takes.
$ReadAndExecute = -1610612736
$RootSddlPath = 'WSMan:\localhost\Service\RootSDDL'

# Adding is tried and "already a member" taken as done: comparing names would miss a UPN or
# another spelling of the account, and Get-LocalGroupMember fails on groups holding orphaned SIDs.
foreach ($groupSid in @($EventLogReaders, $RemoteManagementUsers)) {
    $group = Get-LocalGroup -SID $groupSid
    if ($PSCmdlet.ShouldProcess($group.Name, "Add member $Account")) {
        try {
            Add-LocalGroupMember -SID $groupSid -Member $Account
            Write-Output "Added $Account to $($group.Name)."
        }
        catch [Microsoft.PowerShell.Commands.MemberExistsException] {
            Write-Output "$Account is already in $($group.Name)."
        }
    }
}

$before = (Get-Item -Path $RootSddlPath).Value
Write-Output "RootSDDL before: $before"

$descriptor = New-Object -TypeName System.Security.AccessControl.CommonSecurityDescriptor -ArgumentList $false, $false, $before
$sid = New-Object -TypeName System.Security.Principal.SecurityIdentifier -ArgumentList $RemoteManagementUsers
$granted = @($descriptor.DiscretionaryAcl | Where-Object {
        $_.SecurityIdentifier -eq $sid -and
        $_.AceQualifier -eq 'AccessAllowed' -and
        ($_.AccessMask -band $ReadAndExecute) -eq $ReadAndExecute
    })

if ($granted.Count -gt 0) {
    Write-Output 'Remote Management Users already have Read and Execute in RootSDDL.'
}
else {
    $descriptor.DiscretionaryAcl.AddAccess('Allow', $sid, $ReadAndExecute, 'None', 'None')
    $wanted = $descriptor.GetSddlForm('All')
    if ($PSCmdlet.ShouldProcess($RootSddlPath, "Set to $wanted")) {
        Set-Item -Path $RootSddlPath -Value $wanted -Force
    }
    else {
        Write-Output "RootSDDL would be: $wanted"
    }
}

Write-Output "RootSDDL after:  $((Get-Item -Path $RootSddlPath).Value)"
